#!/usr/bin/env bash
# Run libiscsi's conformance suite (iscsi-test-cu) against an iSCSI target and classify
# every test as passed, failed or skipped.
#
#   test/iscsi/run-test-cu.sh [OPTIONS] URL [OUTDIR]
#
#   URL     iscsi://HOST:PORT/IQN/LUN or iser://... (given twice to iscsi-test-cu, which
#           enables MultipathIO, unless --one-path)
#   OUTDIR  where the verbose text of each suite, results.tsv and timings.tsv go
#           (default: a new directory under ${TMPDIR:-/tmp})
#
# Options:
#   -s, --expected-skips FILE  a skip not allowed by FILE (see expected-skips.tsv) fails
#                              with reason "unexpected skip"
#   -w, --write-skips FILE     write this run's skips to FILE in the expected-skips format
#   -T, --timeout SECS         per-suite time limit (default 120; a hung suite's unfinished
#                              tests fail with reason "timeout")
#   -k, --suites GLOB          run only the suites whose name matches GLOB (default: all)
#   -S, --allow-sanitize       pass -S (SANITIZE tests; they erase the LUN)
#   -1, --one-path             give URL once (MultipathIO then skips): libiscsi 1.19's iSER
#                              client crashes with two iser:// contexts (test/vm/README.md)
#   -h, --help
#
# The whole ALL family runs one suite at a time, each in its own iscsi-test-cu process
# under `timeout`, so a hang or a crash costs one suite, not the run. Each test is
# classified from the verbose text, because iscsi-test-cu's own exit status and CUnit's
# counts treat a skip as a pass:
#   passed   "passed" and no [SKIPPED] line
#   skipped  "passed" and a [SKIPPED] line (the reason is the text of the first one)
#   failed   "FAILED" (the reason is the first [FAILED] message or else the first failed
#            assertion), or no outcome at all: a timeout, a crash of iscsi-test-cu, a failed
#            login or set-up, or a listed test that never ran
# Writes OUTDIR/results.tsv (suite, test, outcome, reason), OUTDIR/timings.tsv (suite,
# seconds, exit status), OUTDIR/outside-tests.tsv ([FAILED] messages of suite set-up and
# clean-up, not counted) and OUTDIR/suites/SUITE.log; prints the skips, the failures and
# "N passed, M failed, K skipped". Exit 0 only when no test failed; 1 when some did; 2 on a usage or
# harness error.
set -euo pipefail

PROG=run-test-cu.sh
FAMILY=ALL

die() {
    echo "$PROG: $*" >&2
    exit 2
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# --- options ------------------------------------------------------------------------------

SUITE_TIMEOUT=120
EXPECTED_SKIPS=
WRITE_SKIPS=
SUITE_GLOB='*'
EXTRA_ARGS=()
PATHS=2

parse_args() {
    local positional=()
    while [ "$#" -gt 0 ]; do
        case "$1" in
            -s | --expected-skips) EXPECTED_SKIPS=${2:?"$1 needs a file"}; shift 2 ;;
            -w | --write-skips) WRITE_SKIPS=${2:?"$1 needs a file"}; shift 2 ;;
            -T | --timeout) SUITE_TIMEOUT=${2:?"$1 needs seconds"}; shift 2 ;;
            -k | --suites) SUITE_GLOB=${2:?"$1 needs a glob"}; shift 2 ;;
            -S | --allow-sanitize) EXTRA_ARGS+=(-S); shift ;;
            -1 | --one-path) PATHS=1; shift ;;
            -h | --help) usage; exit 0 ;;
            --) shift; positional+=("$@"); break ;;
            -*) die "unknown option $1 (see --help)" ;;
            *) positional+=("$1"); shift ;;
        esac
    done
    if [ "${#positional[@]}" -lt 1 ] || [ "${#positional[@]}" -gt 2 ]; then
        usage >&2
        exit 2
    fi
    URL=${positional[0]}
    OUTDIR=${positional[1]:-}
    case "$URL" in iscsi://* | iser://*) ;; *) die "URL must start with iscsi:// or iser:// (got '$URL')" ;; esac
    [[ $SUITE_TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout takes whole seconds (got '$SUITE_TIMEOUT')"
    if [ -n "$EXPECTED_SKIPS" ] && [ ! -r "$EXPECTED_SKIPS" ]; then
        die "cannot read the expected-skips file $EXPECTED_SKIPS"
    fi
}

# --- the test list ------------------------------------------------------------------------

# iscsi-test-cu -l prints FAMILY, FAMILY.SUITE and FAMILY.SUITE.TEST lines. Keep the
# ALL.SUITE.TEST ones, as "SUITE<TAB>TEST", in listing order.
list_tests() {
    iscsi-test-cu -l | awk -F. -v fam="$FAMILY" -v OFS='\t' \
        'NF == 3 && $1 == fam { print $2, $3 }'
}

# --- classifying one suite's verbose text -------------------------------------------------

# classify_suite SUITE LOG RC TESTLIST NOTES: print "SUITE<TAB>TEST<TAB>OUTCOME<TAB>REASON"
# for every test of SUITE in TESTLIST (SUITE<TAB>TEST lines), taking the outcomes from LOG,
# the verbose text of an iscsi-test-cu run whose exit status was RC; append [FAILED]
# messages printed outside any test to NOTES.
#
# CUnit's basic mode prints "\n  Test: NAME ..." when a test starts and "passed" or
# "FAILED" (then the numbered failed assertions) when it ends; whatever the test logs comes
# in between, including libiscsi's "[SKIPPED] reason" and "[FAILED] message" lines. A test
# that started but has no outcome is the one that hung or crashed.
classify_suite() {
    local suite=$1 log=$2 rc=$3 testlist=$4 notes=$5 why_unfinished why_unreached
    case "$rc" in
        124 | 137) # timeout's status, or SIGKILL after the grace period
            why_unfinished="timeout: still running after ${SUITE_TIMEOUT}s"
            why_unreached="timeout: not reached before the suite's ${SUITE_TIMEOUT}s ran out" ;;
        255)
            why_unfinished="iscsi-test-cu set-up failed (exit 255)"
            why_unreached="not run: iscsi-test-cu set-up failed (exit 255): $(setup_error "$log")" ;;
        129 | 1[3-9][0-9] | 2[0-4][0-9] | 25[0-4]) # 128 + the signal that killed it
            why_unfinished="crash: iscsi-test-cu died of $(signal_name $((rc - 128))) in this test"
            why_unreached="not run: iscsi-test-cu died of $(signal_name $((rc - 128))) earlier in the suite" ;;
        *)
            why_unfinished="no outcome printed (iscsi-test-cu exit $rc)"
            why_unreached="not run (iscsi-test-cu exit $rc)" ;;
    esac
    if grep -q 'Suite initialization failed' "$log"; then
        why_unreached="not run: suite set-up failed (the suite's login): $(setup_error "$log")"
    fi

    awk -F'\t' -v OFS='\t' -v suite="$suite" -v unfinished="$why_unfinished" \
        -v unreached="$why_unreached" -v rc="$rc" -v notes="$notes" '
        function clean(s) { gsub(/[\t\r]/, " ", s); sub(/^[ ]+/, "", s); sub(/[ ]+$/, "", s); return s }
        # A [FAILED] message outside any test comes from the suite'"'"'s set-up or clean-up
        # (its logins, clearing persistent reservations): not a test failure, but noted.
        function outside(text) {
            if (text ~ /\[FAILED\]/) print suite, "after " last_done, clean(text) >> notes
        }
        function finish(outcome) {
            if (outcome == "passed" && skip != "") { outcome = "skipped"; reason = skip }
            else if (outcome == "passed") reason = ""
            else { outcome = "failed"; reason = failmsg }
            result[cur] = outcome; why[cur] = reason; seen[++nseen] = cur; last_done = cur
            cur = ""
        }
        # First file: the listed tests of this suite.
        FNR == NR { if ($1 == suite) listed[++nlisted] = $2; next }
        # Second file: the verbose text.
        # The numbered failed assertions after FAILED: the first one is the reason when the
        # test printed no [FAILED] message.
        failed_open != "" && /^    [0-9]+\. / {
            if (why[failed_open] == "") why[failed_open] = clean($0)
            next
        }
        { failed_open = "" }
        /^Suite: / { cur = ""; next }
        /^Run Summary:/ { summary = 1 }
        summary && $0 ~ /^ +tests +/ { split(clean($0), f, / +/); cu_ran = f[3]; cu_failed = f[5]; next }
        summary { next }
        {
            line = $0
            if (match(line, /^  Test: .* \.\.\./)) {
                # A previous test without an outcome stays "started": it hung or crashed.
                cur = substr(line, 9, RLENGTH - 12)
                skip = ""; failmsg = ""; started[cur] = 1
                line = substr(line, RLENGTH + 1)
            }
            if (cur == "") { outside(line); next }
            if (skip == "" && match(line, /\[SKIPPED\]/)) skip = clean(substr(line, RSTART + RLENGTH))
            if (failmsg == "" && match(line, /\[FAILED\]/)) failmsg = clean(substr(line, RSTART + RLENGTH))
            # The outcome starts a line (or follows "..."). CUnit prints the newline before
            # "  Test:", not after the outcome, so the suite clean-up'"'"'s messages can follow
            # "passed" on the same line: they are not the test'"'"'s.
            if (line ~ /^passed([ \t]|$)/) { finish("passed"); outside(substr(line, 7)); next }
            if (line ~ /^FAILED([ \t]|$)/) { fcur = cur; finish("FAILED"); failed_open = fcur; next }
        }
        END {
            n_ok = 0; n_failed = 0
            for (i = 1; i <= nlisted; i++) {
                t = listed[i]
                if (t in result) {
                    o = result[t]; r = why[t]
                    if (o == "failed" && r == "") r = "FAILED (no message)"
                } else if (t in started) {
                    o = "failed"; r = unfinished
                } else {
                    o = "failed"; r = unreached
                }
                if (o == "failed") n_failed++; else n_ok++
                print suite, t, o, r
                done[t] = 1
            }
            # A test that ran but is not in the list (the list and the binary disagree).
            for (i = 1; i <= nseen; i++) if (!(seen[i] in done))
                print suite, seen[i], "failed", "ran but not listed by iscsi-test-cu -l"
            # Cross-check the tests that printed an outcome against CUnit'"'"'s own count,
            # when the run got as far as its summary.
            seen_failed = 0
            for (i = 1; i <= nseen; i++) if (result[seen[i]] == "failed") seen_failed++
            if (cu_ran != "" && (cu_ran != nseen || cu_failed != seen_failed))
                print suite, "(classifier)", "failed", \
                    "CUnit counted " cu_ran " run / " cu_failed " failed, the classifier " \
                    nseen " / " seen_failed ": check " suite ".log"
            if (rc == 1 && n_failed == 0)
                print suite, "(suite)", "failed", "iscsi-test-cu exit 1 but no test failed: check " suite ".log"
        }
    ' "$testlist" "$log"
}

# Why iscsi-test-cu gave up on a login or set-up: its last two lines that speak of a failure
# or an error (else its last two lines), on one line.
setup_error() {
    local lines
    lines=$(grep -iE 'fail|error' "$1" |
        grep -vE '^Run Summary:|^ +(suites|tests|asserts) |^Tests completed with' | tail -n 2 || true)
    [ -n "$lines" ] || lines=$(grep -v '^[[:space:]]*$' "$1" | tail -n 2 || true)
    printf '%s' "$lines" | tr '\t\n' '  ' | cut -c1-200
}

signal_name() {
    local name
    name=$(kill -l "$1" 2>/dev/null) || name=$1
    echo "SIG$name"
}

# --- expected skips -----------------------------------------------------------------------

# apply_expected_skips RESULTS FILE: turn a skip that FILE does not allow into a failure.
# FILE: "Suite.Test<TAB>reason" lines; both columns are shell globs; # starts a comment.
apply_expected_skips() {
    local results=$1 file=$2 tmp suite test outcome reason
    local -a pats=() reasons=()
    local p r i allowed
    while IFS=$'\t' read -r p r || [ -n "$p" ]; do
        case "$p" in '' | '#'*) continue ;; esac
        [ -n "$r" ] || die "$file: entry '$p' has no reason column (TEST<TAB>REASON)"
        pats+=("$p")
        reasons+=("$r")
    done <"$file"
    tmp=$(mktemp)
    while IFS=$'\t' read -r suite test outcome reason; do
        if [ "$outcome" = skipped ]; then
            # Allowed when some entry matches both test and reason; when entries match the
            # test only, the reason changed.
            allowed=
            for i in "${!pats[@]}"; do
                # shellcheck disable=SC2053 # the file's columns are globs on purpose
                if [[ $suite.$test == ${pats[$i]} ]]; then
                    if [[ $reason == ${reasons[$i]} ]]; then
                        allowed=yes
                        break
                    fi
                    allowed="reason changed: expected '${reasons[$i]}'"
                fi
            done
            if [ "$allowed" != yes ]; then
                outcome=failed
                reason="unexpected skip${allowed:+ ($allowed)}: $reason"
            fi
        fi
        printf '%s\t%s\t%s\t%s\n' "$suite" "$test" "$outcome" "$reason"
    done <"$results" >"$tmp"
    mv "$tmp" "$results"
}

# write_skips RESULTS FILE: this run's skips in the expected-skips format, reasons escaped
# so that they match themselves as globs.
write_skips() {
    {
        echo "# Skips seen by $PROG against $URL on $(date -u +%Y-%m-%dT%H:%MZ)."
        echo "# Format: see test/iscsi/expected-skips.tsv. TEST<TAB>REASON, both shell globs."
        awk -F'\t' '$3 == "skipped" {
            r = $4; gsub(/\[/, "[[]", r); gsub(/\*/, "[*]", r); gsub(/\?/, "[?]", r)
            print $1 "." $2 "\t" r }' "$1"
    } >"$2"
}

# --- running ------------------------------------------------------------------------------

# run_suite SUITE LOG: one iscsi-test-cu process for one suite; prints its exit status.
# stdbuf -o0: stdout is a file, and a killed or crashed process would lose its buffered
# text, the very text that says which test hung.
run_suite() {
    local suite=$1 log=$2 rc=0 urls=("$URL")
    [ "$PATHS" -eq 1 ] || urls+=("$URL")
    timeout -k 10 "$SUITE_TIMEOUT" stdbuf -o0 -e0 \
        iscsi-test-cu -d "${EXTRA_ARGS[@]}" -t "$FAMILY.$suite" "${urls[@]}" >"$log" 2>&1 || rc=$?
    echo "$rc"
}

main() {
    parse_args "$@"
    command -v iscsi-test-cu >/dev/null ||
        die "iscsi-test-cu not found: run scripts/deps.sh test (package libiscsi-bin)"
    if [ -z "$OUTDIR" ]; then
        OUTDIR=$(mktemp -d "${TMPDIR:-/tmp}/iscsi-test-cu.XXXXXX")
    fi
    mkdir -p "$OUTDIR/suites"
    local testlist=$OUTDIR/tests.list results=$OUTDIR/results.tsv timings=$OUTDIR/timings.tsv
    local notes=$OUTDIR/outside-tests.tsv
    list_tests >"$testlist"
    [ -s "$testlist" ] || die "iscsi-test-cu -l listed no $FAMILY.SUITE.TEST line"

    local suites=() s
    while IFS= read -r s; do
        # shellcheck disable=SC2053 # SUITE_GLOB is a glob on purpose
        [[ $s == $SUITE_GLOB ]] && suites+=("$s")
    done < <(cut -f1 "$testlist" | awk '!seen[$0]++')
    [ "${#suites[@]}" -gt 0 ] || die "no suite matches '$SUITE_GLOB'"
    local listed
    listed=$(awk -F'\t' 'NR == FNR { want[$0] = 1; next } $1 in want' \
        <(printf '%s\n' "${suites[@]}") "$testlist" | wc -l)

    echo "$PROG: ${#suites[@]} suites, $listed tests, ${SUITE_TIMEOUT}s limit per suite; output in $OUTDIR"
    : >"$results"
    : >"$notes"
    printf 'suite\tseconds\texit\n' >"$timings"
    local rc t0 t1 secs total_start=$SECONDS
    for s in "${suites[@]}"; do
        t0=$(date +%s.%N)
        rc=$(run_suite "$s" "$OUTDIR/suites/$s.log")
        t1=$(date +%s.%N)
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
        printf '%s\t%s\t%s\n' "$s" "$secs" "$rc" >>"$timings"
        classify_suite "$s" "$OUTDIR/suites/$s.log" "$rc" "$testlist" "$notes" >>"$results"
        awk -F'\t' -v s="$s" -v secs="$secs" -v rc="$rc" '$1 == s { n[$3]++ } END {
            printf "  %-26s %3d passed %3d failed %3d skipped  %7ss  exit %s\n",
                s, n["passed"], n["failed"], n["skipped"], secs, rc }' "$results"
    done

    [ -n "$WRITE_SKIPS" ] && write_skips "$results" "$WRITE_SKIPS"
    [ -n "$EXPECTED_SKIPS" ] && apply_expected_skips "$results" "$EXPECTED_SKIPS"
    # Header last, so that the loops above read rows only.
    sed -i '1i suite\ttest\toutcome\treason' "$results"

    report "$results" "$listed" $((SECONDS - total_start)) "$notes"
}

# report RESULTS LISTED SECONDS NOTES: the summary; exit status 0 only with no failure.
report() {
    local results=$1 listed=$2 secs=$3 notes=$4 passed failed skipped classified
    passed=$(awk -F'\t' 'NR > 1 && $3 == "passed"' "$results" | wc -l)
    failed=$(awk -F'\t' 'NR > 1 && $3 == "failed"' "$results" | wc -l)
    skipped=$(awk -F'\t' 'NR > 1 && $3 == "skipped"' "$results" | wc -l)
    classified=$(awk -F'\t' 'NR > 1 && $2 !~ /^\(/' "$results" | wc -l)
    echo
    echo "$PROG: $URL, whole run ${secs}s; results: $results"
    if [ "$skipped" -gt 0 ]; then
        echo "skipped tests:"
        awk -F'\t' 'NR > 1 && $3 == "skipped" { printf "  %s.%s: %s\n", $1, $2, $4 }' "$results"
    fi
    if [ -s "$notes" ]; then
        echo "[FAILED] messages outside any test (suite set-up or clean-up; not counted):"
        awk -F'\t' '{ printf "  %s (%s): %s\n", $1, $2, $3 }' "$notes"
    fi
    if [ "$failed" -gt 0 ]; then
        echo "failed tests:"
        awk -F'\t' 'NR > 1 && $3 == "failed" { printf "  %s.%s: %s\n", $1, $2, $4 }' "$results"
    fi
    local status=0
    [ "$failed" -eq 0 ] || status=1
    # Every listed test must have exactly one row: a pattern that matched nothing, or a
    # classifier bug, would otherwise pass silently.
    if [ "$classified" -ne "$listed" ]; then
        echo "$PROG: harness error: $listed tests listed but $classified classified" >&2
        status=2
    fi
    echo
    echo "$passed passed, $failed failed, $skipped skipped"
    return "$status"
}

main "$@"
