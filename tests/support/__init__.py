"""Helpers the tests import (nothing imports from conftest)."""
