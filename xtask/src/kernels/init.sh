#!/bin/busybox sh
# PID 1 of the kernel matrix's initramfs (xtask/src/kernels): mounts what the profiler needs,
# runs the checks, prints one machine-readable RESULT line and the profiler's logs between
# markers, and powers off. xtask reads the serial console.
#
#   1. the whole VM for 3 s while the traced fixture runs (tests/fixtures/traced*.c: threads
#      publishing known trace contexts in the OpenTelemetry thread-local record): loaded,
#      sampled, the verifier's instruction count, and whether trace A's samples are its hot
#      function's and trace B's are B's (trace context read);
#   2. 2 s with --cgroup on a cgroup holding one busy loop while another runs outside it: every
#      sample must be the inside loop's (cgroup filter).
# Lines of the profiler's log with "degraded:" name what this kernel lacks (kernel_features.rs).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
echo "BOOTED kernel=$(uname -r)"

btf=no
[ -s /sys/kernel/btf/vmlinux ] && btf=yes
RECORD="--interval 1 --frequency 99 --no-adaptive --metrics-address off --node-name kernels"

# Waits until the profiler $1 logged (to $2) that its programs are attached, or ended; the
# load takes seconds under TCG while the fixture's threads compete for the one CPU.
wait_attached() {
    while ! grep -q 'recording the ' "$2"; do
        kill -0 "$1" 2>/dev/null || return
        sleep 0.2
    done
}

# 1. Whole VM, with traced contexts.
traced 0 >/tmp/traced.out 2>&1 &
traced=$!
for _ in 1 2 3 4 5 6 7 8 9 10; do
    grep -q ready /tmp/traced.out && break
    sleep 0.5
done
# shellcheck disable=SC2086
profiler record --duration 3 $RECORD --output-dir /out >/tmp/profiler.log 2>&1 &
profiler=$!
wait_attached "$profiler" /tmp/profiler.log

# The verifier's instruction count of the largest program, from the fdinfo of the profiler's
# program descriptors once it has attached (`verified_insns`: Linux 5.16 and later).
insns=-
for fdinfo in /proc/"$profiler"/fdinfo/*; do
    count=$(sed -n 's/^verified_insns:[[:space:]]*//p' "$fdinfo" 2>/dev/null)
    [ -n "$count" ] || continue
    if [ "$insns" = - ] || [ "$count" -gt "$insns" ]; then insns=$count; fi
done
wait "$profiler"
code=$?
kill "$traced"

# "recording the whole host" is the recorder's first line after the programs are attached.
loaded=no
grep -q 'recording the whole host' /tmp/profiler.log && loaded=yes
samples=$(sed -n 's/.* wrote .* samples=\([0-9]*\) .*/\1/p' /tmp/profiler.log | awk '{ s += $1 } END { print s + 0 }')
files=0
for file in /out/cpu-*.pb.gz; do
    [ -s "$file" ] && files=$((files + 1))
done
sampled=no
[ "$files" -gt 0 ] && [ "$samples" -gt 0 ] && sampled=yes

# Each trace's folded stacks name its own hot function and never the other's.
trace_id() { sed -n "s/^#define $1 \"\(.*\)\"/\1/p" /etc/trace_ids.h; }
folded_of() { profiler report /out --trace "$(trace_id "$1")" --format folded 2>>/tmp/report.log; }
trace=no
if [ "$loaded" = yes ]; then
    a=$(folded_of TRACE_A_ID)
    b=$(folded_of TRACE_B_ID)
    if echo "$a" | grep -q traced_fn_a && ! echo "$a" | grep -q traced_fn_b &&
        echo "$b" | grep -q traced_fn_b && ! echo "$b" | grep -q traced_fn_a; then
        trace=yes
    fi
fi

# 2. Only a cgroup's processes.
cgroup=no
if [ "$loaded" = yes ] && mkdir /sys/fs/cgroup/matrix; then
    sh -c 'echo $$ >/sys/fs/cgroup/matrix/cgroup.procs && while :; do :; done' &
    inside=$!
    (while :; do :; done) &
    outside=$!
    # shellcheck disable=SC2086
    profiler record --duration 2 $RECORD --cgroup /sys/fs/cgroup/matrix \
        --output-dir /out-cgroup >/tmp/profiler-cgroup.log 2>&1
    cgroup_code=$?
    kill "$inside" "$outside"
    # Folded lines start `comm (pid);`: the PIDs sampled.
    pids=$(profiler report /out-cgroup --format folded 2>>/tmp/report.log |
        sed -n 's/^[^;]*(\([0-9]*\));.*/\1/p' | sort -u | tr '\n' ' ')
    [ "$cgroup_code" = 0 ] && [ "$pids" = "$inside " ] && cgroup=yes
    echo "CGROUP inside=$inside outside=$outside sampled=$pids"
fi

degraded=$(cat /tmp/profiler.log /tmp/profiler-cgroup.log 2>/dev/null | grep -c 'degraded:')

echo "PROFILER-LOG-BEGIN"
cat /tmp/profiler.log
[ -s /tmp/profiler-cgroup.log ] && echo "--- --cgroup run ---" && cat /tmp/profiler-cgroup.log
[ -s /tmp/report.log ] && echo "--- reports ---" && cat /tmp/report.log
echo "PROFILER-LOG-END"
echo "RESULT kernel=$(uname -r) btf=$btf loaded=$loaded sampled=$sampled samples=$samples files=$files trace=$trace cgroup=$cgroup degraded=$degraded insns=$insns exit=$code"
poweroff -f
