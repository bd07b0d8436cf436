#!/usr/bin/env bash
# Smoke-test an iSCSI target with the real clients other than iscsi-test-cu: libiscsi's
# command-line tools and qemu's iscsi:// block driver.
#
#   test/iscsi/clients.sh URL
#   test/iscsi/clients.sh --install-qemu   only make qemu able to open iscsi:// URLs (below);
#                                          silent when it already can (scripts/deps.sh test
#                                          runs this)
#
#   URL  iscsi://HOST[:PORT]/IQN/LUN of a scratch LUN of at least 128 MiB: this WRITES to
#        it (the first 64 MiB, the first 1 MiB again, then the bench region)
#
# Checks, each reported ok/FAILED, all run even after a failure:
#   iscsi-ls -s PORTAL              lists IQN and the LUN as a disk
#   iscsi-inq                       standard INQUIRY, then VPD page 0 and every page it lists
#                                   (iscsi-inq -c takes the page code in DECIMAL)
#   iscsi-readcapacity16            a block size and a capacity
#   qemu-img info                   the LUN's size matches READ CAPACITY(16)
#   qemu-img convert  to the LUN    a 64 MiB random file, then back from the LUN, cmp'd
#   qemu-img compare                the file against the LUN's first 64 MiB
#   qemu-io                         write -P 0xab 0 1M, read -P 0xab 0 1M (pattern checked)
#   qemu-img bench                  4 KiB read and write at QD1 and QD32 (IOPS printed)
# The last line is "N passed, M failed"; exit 0 only when every check passed.
#
# qemu reaches iSCSI through the block-iscsi module of qemu-block-extra, which must be the
# exact version of qemu-utils. When the module is missing or does not match, this installs
# a matching pair from apt (see ensure_qemu_iscsi). Environment: BENCH_COUNT (requests per
# bench run, default 20000), KEEP_TMP=1 to keep the scratch directory.
set -euo pipefail

PROG=clients.sh
# The VPD pages libiscsi 1.19 can decode; iscsi-inq says "failed to unmarshall" for others.
DECODED_VPD="00 80 83 b0 b1 b2"
BENCH_COUNT=${BENCH_COUNT:-20000}
SIZE_MIB=64

die() {
    echo "$PROG: $*" >&2
    exit 2
}

say() {
    echo "$PROG: $*"
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# --- the qemu packaging ---------------------------------------------------------------------

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# qemu's iscsi driver is usable when opening an iscsi:// URL gets as far as connecting.
# `qemu-img --help` lists "iscsi" among the formats even when the module is missing, so it
# proves nothing; opening a closed port does: a missing module says "Unable to load module".
qemu_iscsi_works() {
    local out
    command -v qemu-img >/dev/null || return 1
    out=$(timeout 20 qemu-img info iscsi://127.0.0.1:1/iqn.2026-11.test:probe/0 2>&1 || true)
    ! grep -qiE 'Unable to load module|Unknown protocol|Unknown driver' <<<"$out"
}

apt_get() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "not root and no sudo: cannot run apt-get $*"
        sudo=(sudo)
    fi
    echo "+ apt-get $*" >>"$APT_LOG"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q "$@" >>"$APT_LOG" 2>&1; then
        tail -n 30 "$APT_LOG" >&2
        die "apt-get $* failed (log: $APT_LOG)"
    fi
}

# The newest version that apt can install of both qemu-utils and qemu-block-extra.
common_qemu_version() {
    local v
    while read -r v; do
        if apt-cache madison qemu-block-extra | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' |
            grep -qxF "$v"; then
            echo "$v"
            return 0
        fi
    done < <(apt-cache madison qemu-utils | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' |
        sort -V -r | uniq)
    return 1
}

# Make qemu-img/qemu-io able to open iscsi:// URLs. The trap: the machine image may carry
# qemu-utils from bookworm-backports (10.x) with no backports source configured, so no
# matching qemu-block-extra exists; and qemu-block-extra's dependency is satisfied by a
# qemu-system-x86 of its own version, so apt will happily install a 7.2 module next to a
# 10.x qemu-img, which then still cannot load it. So pin both to one version: the installed
# qemu-utils' own when apt has the module for it, else the newest version apt has of both
# (Debian 12's 7.2 here; a backports pair if a backports source is configured), downgrading
# qemu-utils if need be.
ensure_qemu_iscsi() {
    qemu_iscsi_works && return 0
    command -v apt-get >/dev/null || die "qemu cannot open iscsi:// and there is no apt-get"
    APT_LOG=${TMPDIR:-/tmp}/ferrite-qemu-install.log
    : >"$APT_LOG"
    say "qemu's iscsi driver is missing or mismatched: installing a matching qemu-utils + qemu-block-extra (apt log: $APT_LOG)"
    apt_get update
    local have v
    have=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [ -n "$have" ] && apt-cache madison qemu-block-extra | grep -qF "| $have |"; then
        v=$have
    else
        v=$(common_qemu_version) || die "apt has no version of both qemu-utils and qemu-block-extra"
    fi
    say "using qemu $v (qemu-utils was ${have:-not installed})"
    apt_get install -y --no-install-recommends --allow-downgrades \
        "qemu-utils=$v" "qemu-block-extra=$v"
    qemu_iscsi_works || die "qemu-utils and qemu-block-extra $v are installed but qemu-img still cannot open iscsi:// (see: qemu-img info iscsi://127.0.0.1:1/x/0)"
}

ensure_libiscsi_tools() {
    local t
    for t in iscsi-ls iscsi-inq iscsi-readcapacity16; do
        command -v "$t" >/dev/null || die "$t not found: run scripts/deps.sh test (package libiscsi-bin)"
    done
}

# --- checks ---------------------------------------------------------------------------------

PASSED=0
FAILED=0
FAILED_CHECKS=()

# check NAME FUNCTION [ARGS...]: run one check in a subshell, its output indented, and
# count it. In the subshell `fail` can end the check with exit; what a later check needs
# from an earlier one goes through files in $TMP.
check() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo
    echo "--- $name"
    ("$@") 2>&1 | sed -u 's/^/    /' || rc=$?
    if [ "$rc" -eq 0 ]; then
        PASSED=$((PASSED + 1))
        echo "ok: $name ($((SECONDS - start)) s)"
    else
        FAILED=$((FAILED + 1))
        FAILED_CHECKS+=("$name")
        echo "FAILED: $name ($((SECONDS - start)) s)"
    fi
}

# fail MESSAGE: inside a check, say why and end it (the check runs in a subshell).
fail() {
    echo "error: $*"
    exit 1
}

# run CMD...: show the command, run it under a time limit, show its output and keep it
# in $OUT; return its exit status.
run() {
    echo "+ $*"
    local rc=0
    OUT=$(timeout 120 "$@" 2>&1) || rc=$?
    [ -z "$OUT" ] || printf '%s\n' "$OUT"
    [ "$rc" -ne 124 ] || echo "error: timed out after 120 s"
    return "$rc"
}

check_iscsi_ls() {
    run iscsi-ls -s "$PORTAL" || fail "iscsi-ls exited non-zero"
    grep -q "^Target:$IQN " <<<"$OUT" || fail "target $IQN not listed by the portal"
    grep -qE "^Lun:$LUN +Type:DIRECT_ACCESS" <<<"$OUT" || fail "LUN $LUN not listed as DIRECT_ACCESS"
}

check_inquiry_standard() {
    run iscsi-inq "$URL" || fail "standard INQUIRY failed"
    grep -q '^Peripheral Device Type:DIRECT_ACCESS' <<<"$OUT" || fail "not a DIRECT_ACCESS device"
}

check_inquiry_vpd() {
    run iscsi-inq -e 1 -c 0 "$URL" || fail "VPD page 0 (supported pages) failed"
    local pages page dec bad=0
    pages=$(sed -n 's/^Page:0x\([0-9a-fA-F]*\) .*/\1/p' <<<"$OUT")
    [ -n "$pages" ] || fail "VPD page 0 lists no page"
    grep -qx '00' <<<"$pages" || echo "note: page 0 does not list itself (SPC requires it)"
    for page in $pages; do
        page=$(tr 'A-F' 'a-f' <<<"$page")
        [ "$page" = 00 ] && continue
        dec=$((16#$page))
        if run iscsi-inq -e 1 -c "$dec" "$URL" >/dev/null; then
            echo "VPD page 0x$page (-c $dec): ok, $(grep -c '' <<<"$OUT") lines"
        elif grep -q 'failed to unmarshall' <<<"$OUT" && ! grep -qw "$page" <<<"$DECODED_VPD"; then
            # The INQUIRY itself was GOOD: libiscsi just has no decoder for this page.
            echo "VPD page 0x$page (-c $dec): GOOD, but iscsi-inq cannot decode it (libiscsi decodes $DECODED_VPD only)"
        else
            echo "error: VPD page 0x$page (iscsi-inq -c $dec) failed: $OUT"
            bad=1
        fi
    done
    [ "$bad" -eq 0 ] || fail "some listed VPD pages failed"
}

check_readcapacity16() {
    run iscsi-readcapacity16 "$URL" || fail "READ CAPACITY(16) failed"
    local block_size lun_bytes
    block_size=$(sed -n 's/^LOGICAL BLOCK LENGTH IN BYTES:\([0-9]*\)/\1/p' <<<"$OUT")
    lun_bytes=$(sed -n 's/^Total size:\([0-9]*\)/\1/p' <<<"$OUT")
    [ -n "$block_size" ] || fail "no LOGICAL BLOCK LENGTH in the output"
    [ -n "$lun_bytes" ] || fail "no Total size in the output"
    echo "$lun_bytes" >"$TMP/lun_bytes"
    [ "$lun_bytes" -ge $((2 * SIZE_MIB * 1024 * 1024)) ] ||
        fail "the LUN ($lun_bytes bytes) is smaller than the $((2 * SIZE_MIB)) MiB this needs"
}

check_qemu_info() {
    run qemu-img info "$URL" || fail "qemu-img info failed"
    local size rc16
    size=$(sed -n 's/^virtual size: .*(\([0-9]*\) bytes).*/\1/p' <<<"$OUT")
    [ -n "$size" ] || fail "no virtual size in the output"
    rc16=$(cat "$TMP/lun_bytes" 2>/dev/null || true)
    if [ -n "$rc16" ] && [ "$size" != "$rc16" ]; then
        fail "qemu-img says $size bytes, READ CAPACITY(16) $rc16"
    fi
}

# The LUN's first SIZE_MIB MiB as a qemu image: a raw format layer with a size limit over
# the iscsi protocol driver, so that convert and compare need not read the whole LUN. The
# protocol driver takes no URL here (file.filename would be a local path): its options
# are spelled out, and CHAP's secret goes in a --object secret (SECRET_OBJECT).
lun_head_opts() {
    local opts="driver=raw,size=$((SIZE_MIB * 1024 * 1024)),file.driver=iscsi,file.transport=tcp"
    opts+=",file.portal=$HOSTPORT,file.target=$IQN,file.lun=$LUN"
    [ -z "$CHAP_USER" ] || opts+=",file.user=$CHAP_USER,file.password-secret=chap0"
    echo "$opts"
}

check_qemu_convert() {
    head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$TMP/src.raw"
    # -n: the target exists; qemu cannot "create" an iSCSI LUN.
    run qemu-img convert -n -f raw -O raw "$TMP/src.raw" "$URL" || fail "convert file -> LUN failed"
    run qemu-img convert "${SECRET_OBJECT[@]}" --image-opts "$(lun_head_opts)" -O raw "$TMP/back.raw" ||
        fail "convert LUN -> file failed"
    cmp "$TMP/src.raw" "$TMP/back.raw" || fail "the data read back differs from the data written"
    echo "round trip of $SIZE_MIB MiB: identical"
}

check_qemu_compare() {
    [ -s "$TMP/src.raw" ] || fail "no source file (the convert check failed)"
    run qemu-img compare "${SECRET_OBJECT[@]}" --image-opts \
        "driver=raw,file.driver=file,file.filename=$TMP/src.raw" "$(lun_head_opts)" ||
        fail "qemu-img compare: the LUN differs from the file (or compare failed)"
}

check_qemu_io() {
    run qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' "$URL" || fail "qemu-io failed"
    ! grep -qiE 'Pattern verification failed|error' <<<"$OUT" || fail "qemu-io reported an error"
    grep -q '^wrote 1048576/1048576 bytes' <<<"$OUT" || fail "no complete write"
    grep -q '^read 1048576/1048576 bytes' <<<"$OUT" || fail "no complete read"
}

# bench MODE DEPTH: one qemu-img bench run of BENCH_COUNT 4 KiB requests; prints IOPS.
bench() {
    local mode=$1 depth=$2 w=() secs
    [ "$mode" = write ] && w=(-w)
    if ! run qemu-img bench -f raw -c "$BENCH_COUNT" -d "$depth" -s 4096 "${w[@]}" "$URL"; then
        echo "error: qemu-img bench ($mode QD$depth) failed"
        return 1
    fi
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' <<<"$OUT")
    if [ -z "$secs" ]; then
        echo "error: no 'Run completed in' line"
        return 1
    fi
    awk -v n="$BENCH_COUNT" -v s="$secs" -v m="$mode" -v d="$depth" \
        'BEGIN { printf "BENCH %s QD%d: %d requests in %.3f s = %.0f IOPS\n", m, d, n, s, n / s }' |
        tee -a "$TMP/bench.txt"
}

check_qemu_bench() {
    local mode depth bad=0
    for mode in read write; do
        for depth in 1 32; do
            bench "$mode" "$depth" || bad=1
        done
    done
    [ "$bad" -eq 0 ] || fail "a bench run failed"
}

# --- main -----------------------------------------------------------------------------------

parse_url() {
    # iscsi://[user%secret@]HOST[:PORT]/IQN/LUN
    local re='^iscsi://([^/@]*@)?([^/]+)/([^/]+)/([0-9]+)$'
    [[ $URL =~ $re ]] || die "URL must be iscsi://HOST[:PORT]/IQN/LUN (got '$URL')"
    local auth=${BASH_REMATCH[1]}
    HOSTPORT=${BASH_REMATCH[2]}
    IQN=${BASH_REMATCH[3]}
    LUN=${BASH_REMATCH[4]}
    PORTAL=iscsi://$auth$HOSTPORT
    [[ $HOSTPORT == *:* ]] || HOSTPORT+=:3260
    CHAP_USER=
    SECRET_OBJECT=()
    if [ -n "$auth" ]; then
        auth=${auth%@}
        CHAP_USER=${auth%%%*}
        SECRET_OBJECT=(--object "secret,id=chap0,data=${auth#*%}")
    fi
}

main() {
    case "${1:-}" in
        -h | --help) usage; exit 0 ;;
        --install-qemu) ensure_qemu_iscsi; exit 0 ;;
    esac
    if [ "$#" -ne 1 ]; then
        usage >&2
        exit 2
    fi
    URL=$1
    parse_url
    ensure_libiscsi_tools
    ensure_qemu_iscsi
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferrite-clients.XXXXXX")
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        say "scratch files kept in $TMP"
    else
        trap 'rm -rf "$TMP"' EXIT
    fi
    say "$URL ($(qemu-img --version | head -n 1), $(dpkg-query -W -f='libiscsi-bin ${Version}' libiscsi-bin))"

    check "iscsi-ls -s (portal lists the target and LUN)" check_iscsi_ls
    check "iscsi-inq standard INQUIRY" check_inquiry_standard
    check "iscsi-inq every VPD page listed in page 0" check_inquiry_vpd
    check "iscsi-readcapacity16" check_readcapacity16
    check "qemu-img info" check_qemu_info
    check "qemu-img convert to and from the LUN ($SIZE_MIB MiB random)" check_qemu_convert
    check "qemu-img compare" check_qemu_compare
    check "qemu-io write/read pattern 0xab" check_qemu_io
    check "qemu-img bench 4 KiB QD1/QD32 read and write" check_qemu_bench

    echo
    [ -s "$TMP/bench.txt" ] && sed 's/^BENCH /qemu-img bench /' "$TMP/bench.txt"
    [ "$FAILED" -eq 0 ] || echo "failed checks: $(printf '%s; ' "${FAILED_CHECKS[@]}")"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

main "$@"
