"""Business-day conventions, pure: how a due date on a day banks are shut rolls,
checked against dates of China's calendar that anyone can look up."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.contracts.business_days import Convention, is_business_day, roll
from services.contracts.products import PRODUCTS
from services.repayment.calc import add_months, bullet_schedule

D = dt.date.fromisoformat


@pytest.mark.parametrize(
    ("day", "following", "modified"),
    [
        ("2027-03-03", "2027-03-03", "2027-03-03"),  # a Wednesday stands
        ("2027-03-06", "2027-03-08", "2027-03-08"),  # Saturday to Monday
        ("2027-07-31", "2027-08-02", "2027-07-30"),  # month end: modified goes back
        ("2027-01-31", "2027-02-01", "2027-01-29"),
        ("2025-01-29", "2025-02-05", "2025-01-27"),  # Spring Festival 2025 (28 Jan to 4 Feb)
        ("2025-10-01", "2025-10-09", "2025-10-09"),  # National Day week and Mid-Autumn
        ("2025-01-26", "2025-01-26", "2025-01-26"),  # a Sunday worked in lieu is open
    ],
)
def test_a_date_rolls_by_the_convention(day: str, following: str, modified: str) -> None:
    assert roll(D(day), Convention.NONE, "CN") == D(day)
    assert roll(D(day), Convention.FOLLOWING, "CN") == D(following)
    assert roll(D(day), Convention.MODIFIED_FOLLOWING, "CN") == D(modified)


def test_a_calendar_nobody_has_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="no holiday calendar 'XX'"):
        roll(D("2027-03-06"), Convention.FOLLOWING, "XX")
    with pytest.raises(ValueError):
        Convention("preceding")
    assert roll(D("2027-03-06"), Convention.NONE, "XX") == D("2027-03-06")  # none rolls nothing


def test_each_product_names_a_convention_and_a_calendar_that_exists() -> None:
    for product in PRODUCTS.values():
        roll(D("2027-03-06"), product.business_days, product.holiday_calendar)
    assert {p.business_days for p in PRODUCTS.values()} == set(Convention)


@given(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 12, 31)))
def test_a_rolled_date_is_a_business_day_near_the_date(day: dt.date) -> None:
    following = roll(day, Convention.FOLLOWING, "CN")
    modified = roll(day, Convention.MODIFIED_FOLLOWING, "CN")
    for rolled in (following, modified):
        assert is_business_day(rolled, "CN")
        assert abs((rolled - day).days) <= 14
        assert roll(rolled, Convention.FOLLOWING, "CN") == rolled  # rolling again moves nothing
    assert following >= day
    assert modified.month == day.month
    if is_business_day(day, "CN"):
        assert following == modified == day
    else:  # nothing between the date and its roll is open
        step = 1 if modified >= day else -1
        between = [day + dt.timedelta(days=k) for k in range(0, (modified - day).days, step)]
        assert not any(is_business_day(d, "CN") for d in between)


def test_the_examples_of_the_docs() -> None:
    """docs/repayment.md and docs/leasing.md, figure by figure."""
    maturity = roll(D("2027-07-31"), Convention.MODIFIED_FOLLOWING, "CN")
    assert maturity == D("2027-07-30")
    (line,) = bullet_schedule(30_000_000, 530, D("2027-07-01"), maturity, "ACT/360")
    assert line.interest_minor == 128_083  # 1,280.83
    assert roll(D("2025-01-29"), Convention.FOLLOWING, "CN") == D("2025-02-05")
    third = add_months(D("2026-12-04"), 9)  # in arrears: the third quarter's end
    assert (third, roll(third, Convention.FOLLOWING, "CN")) == (D("2027-09-04"), D("2027-09-06"))
