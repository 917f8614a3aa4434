"""`cifarlab audit`: likely label errors (confident learning, the `audit` extra) and near-duplicate images."""

from cifarlab.auditing.auditor import AuditResult, audit

__all__ = ["AuditResult", "audit"]
