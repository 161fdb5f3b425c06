"""The one Celery task: run one whole workflow execution for a job id."""

from __future__ import annotations

from worker.celery_app import EXECUTE_TASK, celery_app
from worker.runner import current_runner


@celery_app.task(name=EXECUTE_TASK, ignore_result=True)
def execute(job_id: str) -> None:
    """Run the job; every outcome is written to the job record, not returned."""
    current_runner().run(job_id)
