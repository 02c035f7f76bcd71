"""`make bench`: the service against direct tabpfn-client calls, side by side in one run."""
