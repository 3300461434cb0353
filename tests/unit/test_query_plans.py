"""The job endpoints find their rows through indexes: no request scans the whole history."""

import pytest

from image2model.pipeline import lifecycle
from image2model.store import db
from tests import images
from tests.conftest import USER_KEY, bearer


@pytest.fixture
def statements(monkeypatch):
    """Collect every SELECT the app's connections run (parameters filled in)."""
    seen = []
    connect = db.connect

    def traced(path):
        conn = connect(path)
        conn.set_trace_callback(
            lambda sql: seen.append(sql) if sql.lstrip().upper().startswith("SELECT") else None
        )
        return conn

    monkeypatch.setattr(db, "connect", traced)
    return seen


def test_job_endpoints_never_scan_a_history_table(app, client, statements):
    body = images.uploaded(client, [("chair.png", images.png())])
    lifecycle.get_dispatcher(app).run_due()
    job_id, task_id = body["job_id"], body["task_id"]
    file_id = body["uploaded_files"][0]["file_id"]
    statements.clear()
    for path in (
        f"/api/v1/upload/status/{file_id}",
        f"/api/v1/upload/batch/{body['batch_id']}/status",
        f"/api/v1/models/job/{job_id}",
        f"/api/v1/status/jobs/{job_id}/progress",
        f"/api/v1/status/tasks/{task_id}/status",
        f"/api/v1/status/tasks/{task_id}/stream",
        f"/api/v1/download/{job_id}/all",
        f"/api/v1/download/{job_id}/chair.glb",
        "/api/v1/download/direct/chair.glb",
    ):
        response = client.get(path, headers=bearer(USER_KEY))
        assert response.status_code == 200, (path, response.get_data(as_text=True))
        response.close()
    generate = client.post(
        "/api/v1/models/generate", json={"file_id": file_id}, headers=bearer(USER_KEY)
    )
    assert generate.status_code == 202
    assert statements
    conn = db.connect(db.database_path(app))
    try:
        for sql in set(statements):
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            # Every table here keeps the whole history; only constant rows may be scanned.
            scans = [step for step in plan if step.startswith("SCAN ") and "CONSTANT" not in step]
            assert not scans, (sql, plan)
    finally:
        conn.close()
