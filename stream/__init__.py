"""Streaming field-sales KPI engine (spec: ../shared/kpi-spec.md)."""
