#!/usr/bin/env bash
# Self-test of run-test-cu.sh's classifier, with no target: a fake iscsi-test-cu on PATH
# replays canned CUnit text for each suite (passes, skips, failures, clean-up messages after
# "passed", a hang, a crash, a failed login, a test that never ran, a wrong count) and the
# results are compared with what they must be.
#
#   test/iscsi/selftest.sh
#
# Needs bash, coreutils and awk only. Last line "N passed, M failed"; exit 0 when all pass.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/run-test-cu-selftest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0

ok() {
    PASSED=$((PASSED + 1))
    echo "ok: $*"
}

not_ok() {
    FAILED=$((FAILED + 1))
    echo "FAILED: $*"
}

# --- the fake iscsi-test-cu -----------------------------------------------------------------

mkdir -p "$WORK/bin" "$WORK/canned"
cat >"$WORK/bin/iscsi-test-cu" <<'EOF'
#!/usr/bin/env bash
# Fake iscsi-test-cu: -l prints $FAKE_CU/list; -t ALL.SUITE prints $FAKE_CU/SUITE.out, then
# does what $FAKE_CU/SUITE.then says (exit N, hang, or die of a signal).
set -euo pipefail
suite=
while [ "$#" -gt 0 ]; do
    case "$1" in
        -l) cat "$FAKE_CU/list"; exit 0 ;;
        -t) suite=${2#ALL.}; shift 2 ;;
        *) shift ;;
    esac
done
[ -f "$FAKE_CU/$suite.out" ] || exit 0 # like the real one: a pattern matching nothing runs nothing
cat "$FAKE_CU/$suite.out"
read -r action arg <"$FAKE_CU/$suite.then"
case "$action" in
    exit) exit "$arg" ;;
    hang) exec sleep 60 ;;
    signal) kill -s "$arg" $$ ;;
esac
EOF
chmod +x "$WORK/bin/iscsi-test-cu"

C=$WORK/canned
cat >"$C/list" <<'EOF'
ALL
ALL.Alpha
ALL.Alpha.One
ALL.Alpha.Two
ALL.Beta
ALL.Beta.Skip
ALL.Beta.FailMsg
ALL.Beta.FailAssert
ALL.Beta.LateSkip
ALL.Gamma
ALL.Gamma.Last
ALL.Delta
ALL.Delta.Fine
ALL.Delta.Hangs
ALL.Delta.Never
ALL.Epsilon
ALL.Epsilon.Dies
ALL.Epsilon.After
ALL.Zeta
ALL.Zeta.NoLogin
ALL.Eta
ALL.Eta.Ran
ALL.Eta.Missing
ALL.Theta
ALL.Theta.Login
SCSI
SCSI.Alpha
SCSI.Alpha.One
EOF

summary() { # total ran passed failed
    printf '\n\nRun Summary:    Type  Total    Ran Passed Failed Inactive\n'
    printf '              suites      1      1    n/a      0        0\n'
    printf '               tests %6d %6d %6d %6d        0\n' "$1" "$2" "$3" "$4"
    printf '\nElapsed time =    0.001 seconds\nTests completed with return value: 0\n'
}

header() {
    printf 'found matching LU device identifier for all (2) paths\n\n\n\n'
    printf '     CUnit - A unit testing framework for C - Version 2.1-3\n\n\nSuite: %s' "$1"
}

{
    header Alpha
    printf '\n  Test: One ...passed\n  Test: Two ...    [WARNING] BUSY_TIMEOUT_PERIOD is undefined.\npassed'
    summary 2 2 2 0
} >"$C/Alpha.out"
echo "exit 0" >"$C/Alpha.then"

{
    header Beta
    printf '\n  Test: Skip ...    [SKIPPED] Logical unit is fully provisioned. Skipping test\npassed'
    printf '\n  Test: FailMsg ...    [FAILED] READ10 successful but should have failed\nFAILED\n'
    printf '    1. test_x.c:38  - CU_ASSERT_EQUAL(_r,0)'
    printf '\n  Test: FailAssert ...FAILED\n    1. test_y.c:45  - CU_ASSERT_EQUAL(a,b)\n'
    printf '    2. test_y.c:46  - CU_ASSERT_EQUAL(c,d)'
    printf '\n  Test: LateSkip ...    some log line\n    [SKIPPED] COMPAREANDWRITE is not implemented.\n'
    printf '    [SKIPPED] COMPAREANDWRITE is not implemented.\npassed'
    summary 4 4 2 2
} >"$C/Beta.out"
echo "exit 1" >"$C/Beta.then"

{
    header Gamma
    printf '\n  Test: Last ...passed    [FAILED] PRIN command: failed with sense. UNIT_ATTENTION\n'
    summary 1 1 1 0
} >"$C/Gamma.out"
echo "exit 0" >"$C/Gamma.then"

{
    header Delta
    printf '\n  Test: Fine ...passed\n  Test: Hangs ...'
} >"$C/Delta.out"
echo "hang" >"$C/Delta.then"

{
    header Epsilon
    printf '\n  Test: Dies ...'
} >"$C/Epsilon.out"
echo "signal SEGV" >"$C/Epsilon.then"

printf 'Login Failed. Failed to log in to target. Status: Target not found(515)\nFailed to connect to SCSI device 0\n' >"$C/Zeta.out"
echo "exit 255" >"$C/Zeta.then"

# Eta: one listed test never shows up, and CUnit's count (2 ran) disagrees with the text.
{
    header Eta
    printf '\n  Test: Ran ...passed'
    summary 2 2 2 0
} >"$C/Eta.out"
echo "exit 0" >"$C/Eta.then"

# Theta: the suite's own login fails (CUnit runs none of its tests).
{
    header Theta
    printf '\nerror: Failed to login to target for test set-up\n'
    printf "\nWARNING - Suite initialization failed for 'Theta'."
    summary 1 0 0 0
} >"$C/Theta.out"
echo "exit 1" >"$C/Theta.then"

expected_results() {
    cat <<'EOF'
suite	test	outcome	reason
Alpha	One	passed	
Alpha	Two	passed	
Beta	Skip	skipped	Logical unit is fully provisioned. Skipping test
Beta	FailMsg	failed	READ10 successful but should have failed
Beta	FailAssert	failed	1. test_y.c:45  - CU_ASSERT_EQUAL(a,b)
Beta	LateSkip	skipped	COMPAREANDWRITE is not implemented.
Gamma	Last	passed	
Delta	Fine	passed	
Delta	Hangs	failed	timeout: still running after 2s
Delta	Never	failed	timeout: not reached before the suite's 2s ran out
Epsilon	Dies	failed	crash: iscsi-test-cu died of SIGSEGV in this test
Epsilon	After	failed	not run: iscsi-test-cu died of SIGSEGV earlier in the suite
Zeta	NoLogin	failed	not run: iscsi-test-cu set-up failed (exit 255): Login Failed. Failed to log in to target. Status: Target not found(515) Failed to connect to SCSI device 0
Eta	Ran	passed	
Eta	Missing	failed	not run (iscsi-test-cu exit 0)
Eta	(classifier)	failed	CUnit counted 2 run / 0 failed, the classifier 1 / 0: check Eta.log
Theta	Login	failed	not run: suite set-up failed (the suite's login): error: Failed to login to target for test set-up WARNING - Suite initialization failed for 'Theta'.
EOF
}

# --- the checks -----------------------------------------------------------------------------

export FAKE_CU=$C
export PATH=$WORK/bin:$PATH
URL=iscsi://127.0.0.1:3260/iqn.2026-11.test:fake/1
RUN=$HERE/run-test-cu.sh

# check_run NAME EXPECTED_STATUS ARGS...: run the harness, keep its output and status.
check_run() {
    local name=$1 want=$2 rc=0
    shift 2
    "$RUN" "$@" >"$WORK/$name.out" 2>&1 || rc=$?
    if [ "$rc" -eq "$want" ]; then
        ok "$name: exit $rc"
    else
        not_ok "$name: exit $rc, expected $want"
        sed 's/^/    /' "$WORK/$name.out"
    fi
}

check_run whole 1 -T 2 "$URL" "$WORK/whole"
if diff -u <(expected_results) "$WORK/whole/results.tsv" >"$WORK/diff"; then
    ok "whole: results.tsv classifies every listed test as expected"
else
    not_ok "whole: results.tsv differs from the expected (- expected, + got):"
    sed 's/^/    /' "$WORK/diff"
fi
if tail -n 1 "$WORK/whole.out" | grep -qx '5 passed, 10 failed, 2 skipped'; then
    ok "whole: summary line"
else
    not_ok "whole: summary line is '$(tail -n 1 "$WORK/whole.out")'"
fi
if grep -q $'^Gamma\tafter Last\t\\[FAILED\\] PRIN command' "$WORK/whole/outside-tests.tsv"; then
    ok "whole: a [FAILED] after \"passed\" is a clean-up note, not a failure"
else
    not_ok "whole: the clean-up message was not noted in outside-tests.tsv"
fi
if [ "$(wc -l <"$WORK/whole/timings.tsv")" -eq 9 ]; then
    ok "whole: timings.tsv has a row per suite"
else
    not_ok "whole: timings.tsv has $(wc -l <"$WORK/whole/timings.tsv") lines, expected 9"
fi

# Expected skips: Beta.Skip allowed by glob; Beta.LateSkip listed with another reason.
printf '# comment\nBeta.S*\tLogical unit is fully provisioned*\nBeta.LateSkip\tsomething else\n' \
    >"$WORK/skips.tsv"
check_run skips 1 -k Beta -s "$WORK/skips.tsv" "$URL" "$WORK/skips"
if grep -q $'^Beta\tSkip\tskipped\t' "$WORK/skips/results.tsv" &&
    grep -q $'^Beta\tLateSkip\tfailed\tunexpected skip (reason changed' "$WORK/skips/results.tsv"; then
    ok "skips: listed skip stays a skip; a changed reason fails"
else
    not_ok "skips: wrong classification:"
    sed 's/^/    /' "$WORK/skips/results.tsv"
fi
printf 'Beta.Skip\tLogical*\n' >"$WORK/skips2.tsv"
check_run skips-unlisted 1 -k Beta -s "$WORK/skips2.tsv" "$URL" "$WORK/skips2"
if grep -q $'^Beta\tLateSkip\tfailed\tunexpected skip: COMPAREANDWRITE' "$WORK/skips2/results.tsv"; then
    ok "skips: an unlisted skip fails with \"unexpected skip\""
else
    not_ok "skips: the unlisted skip was not failed"
fi

# --write-skips output must be accepted by --expected-skips as it is.
check_run write-skips 1 -k Beta -w "$WORK/written.tsv" "$URL" "$WORK/w1"
check_run reuse-skips 1 -k Beta -s "$WORK/written.tsv" "$URL" "$WORK/w2"
if [ "$(grep -c $'\tskipped\t' "$WORK/w2/results.tsv")" -eq 2 ]; then
    ok "write-skips: a written file allows exactly the skips it saw"
else
    not_ok "write-skips: the written file did not allow its own skips"
fi

check_run all-pass 0 -k Alpha "$URL" "$WORK/alpha"
check_run no-such-suite 2 -k Nope "$URL" "$WORK/nope"
check_run bad-url 2 http://x "$WORK/bad"

echo
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
