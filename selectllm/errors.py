"""Errors a user can act on.  The CLI prints them as one line (no traceback unless --debug)."""


class UserError(Exception):
    """Bad config, unreadable input, missing credentials: the message is the whole story."""


class BudgetExceeded(UserError):
    """``select.strict_budget`` is on and the LLM budget ran out before every group was decided."""
