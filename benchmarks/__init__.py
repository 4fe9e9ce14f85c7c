"""The benchmarks, and :mod:`benchmarks.harness`, the set-up they share with the tests."""
