"""The TabPFN upstream: the client, account calls, fit/predict, faults, pacing."""
