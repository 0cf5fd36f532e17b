"""Speed and memory measurements that print tables; never asserted in the test suite."""
