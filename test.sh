#!/usr/bin/env bash
# Install what the tests need (starting nothing), lint, then run the whole suite.
#   ./test.sh                 everything
#   ./test.sh --unit          only the tests that need no root and no kernel (seconds; no stack build)
#   ./test.sh -k stack -x     extra arguments go to pytest
# The exit code is pytest's; a lint failure is reported but does not hide the test results.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
tests=tests
if [ "${1:-}" = "--unit" ]; then
    shift
    tests=tests/unit
    # The unit tests need the venv only: install it (and the rest) once, if it is not there yet.
    [ -x .venv/bin/pytest ] || ./install.sh --deps-only
else
    ./install.sh --deps-only
    # The newer stack (forky: Python 3.14) that apps asking for it build on. Debian's testing suite
    # can be mid-transition (a package briefly uninstallable): then its tests skip, saying why,
    # and the rest of the suite runs as ever.
    echo
    echo "-----> Stack debian-14 (Python 3.14) for the tests of apps that ask for it"
    .venv/bin/python -m dynod.stack build debian-14 \
        | { grep --line-buffered -v -E '^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) ' || true; } \
        || echo "warning: stack debian-14 did not build (see above): its tests are skipped" >&2
fi
echo
echo "-----> ruff check dynod tests"
lint=0
.venv/bin/ruff check dynod tests || lint=$?
echo
# The integration tests spend most of their time waiting (on builds from the registries, boots,
# timeouts), so they run in parallel workers, one test file per worker at a time (each file's
# dynods and servers stay in one worker; every test dynod is private: docs/operations.md).
# DYNOD_TEST_WORKERS=0 runs everything in this one process.
workers=()
if [ "$tests" = tests ] && [ "${DYNOD_TEST_WORKERS:-auto}" != 0 ]; then
    workers=(-n "${DYNOD_TEST_WORKERS:-auto}" --dist loadfile)
fi
echo "-----> pytest -q ${workers[*]} $tests $*"
status=0
.venv/bin/pytest -q "${workers[@]}" "$tests" "$@" || status=$?
if [ "$lint" -ne 0 ]; then
    echo "ruff check found problems (exit $lint); see above." >&2
fi
exit "$status"
