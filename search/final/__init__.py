"""After the search: the champion rule, re-evaluation of the contenders on new seeds, the
ensemble, the test report, the registry and the exports."""
