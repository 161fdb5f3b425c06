"""Workers: the Celery app and task, the DAG engine and the node types.

``worker.celery_app`` exposes the Celery app (``celery -A worker.celery_app``);
``worker.tasks`` holds the one task, a thin wrapper around ``worker.runner``;
``worker.engine`` runs a workflow's DAG and imports no Celery; node
implementations live in ``worker.nodes``, one module per category.

May import the loader, the repository package and the service core.
"""
