"""Billing stalled by a permission it lost (42501): 503 on /readyz with the lag, no dead letter,
and everything priced once when the permission is back (issue 9, part 5).
"""

from __future__ import annotations

from tests.metering.ledgers import Case
from tests.metering.stalls import stall_and_recover


async def test_a_lost_permission_stalls_billing_and_it_recovers(case: Case) -> None:
    after = await stall_and_recover(
        case,
        "billing",
        # A table the service may no longer write: a trigger raising 42501 on every insert.
        """CREATE FUNCTION "{schema}".deny() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN RAISE EXCEPTION 'permission denied for the test' USING ERRCODE = '42501';
           END $$;
           CREATE TRIGGER deny BEFORE INSERT OR UPDATE ON "{schema}".cost_day
               FOR EACH ROW EXECUTE FUNCTION "{schema}".deny()""",
        'DROP TRIGGER deny ON "{schema}".cost_day',
    )
    assert (after["dead_letters"], after["refused"]) == (0, 0), after
    assert "InsufficientPrivilegeError" in str(after["last_error"]), after
