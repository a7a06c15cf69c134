"""Placeholder router, filled in by the issue-10 work."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
