"""Stages: functions (config) -> result, idempotent and resumable, knowing nothing of schedulers."""
