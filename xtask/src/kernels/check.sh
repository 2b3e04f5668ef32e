# The kernel matrix's check (xtask/src/kernels), run by init.sh inside each VM and by xtask on
# the host's own kernel; prints the profiler's logs between markers and one machine-readable
# RESULT line.
#
#   1. the whole machine for 3 s with --off-cpu while the traced fixture runs
#      (tests/fixtures/traced*.c: threads publishing known trace contexts in the OpenTelemetry
#      thread-local record): loaded, sampled, the verifier's instruction count, whether trace
#      A's samples are its hot function's and trace B's are B's (trace context read), and
#      whether waits off the CPU were recorded (the machine's own: the check's sleeps);
#   2. 2 s with --cgroup on a new cgroup holding one busy loop while another runs outside it:
#      every sample must be the inside loop's (cgroup filter);
#   3. 2 s of each build of the Go labels fixture (tests/fixtures/go/labels, `golabels-<go
#      version>` on PATH: the oldest and newest pinned Go, a map and a slice of labels): trace
#      A's samples are main.(*server).handle's and B's main.(*worker).process's (Go labels).
# Lines of the profiler's log with "degraded:" name what this kernel lacks (kernel_features.rs).
#
# Environment: OUT (an empty directory for profiles and logs), TRACE_IDS (the fixture's
# trace_ids.h), GO_SOURCE (the Go fixture's main.go, for its trace IDs), CGROUP_ROOT (the
# cgroup2 mount); `profiler`, `traced` and the `golabels-*` builds on PATH.
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

# 1. The whole machine, with traced contexts.
traced 0 >"$OUT"/traced.out 2>&1 &
traced=$!
for _ in 1 2 3 4 5 6 7 8 9 10; do
    grep -q ready "$OUT"/traced.out && break
    sleep 0.5
done
# shellcheck disable=SC2086
profiler record --duration 3 $RECORD --off-cpu --output-dir "$OUT"/whole >"$OUT"/profiler.log 2>&1 &
profiler=$!
wait_attached "$profiler" "$OUT"/profiler.log

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
wait "$traced" 2>/dev/null

# "recording the whole host" is the recorder's first line after the programs are attached.
loaded=no
grep -q 'recording the whole host' "$OUT"/profiler.log && loaded=yes
samples=$(sed -n 's/.* wrote .* samples=\([0-9]*\) .*/\1/p' "$OUT"/profiler.log | awk '{ s += $1 } END { print s + 0 }')
files=0
for file in "$OUT"/whole/cpu-*.pb.gz; do
    [ -s "$file" ] && files=$((files + 1))
done
sampled=no
[ "$files" -gt 0 ] && [ "$samples" -gt 0 ] && sampled=yes
waits=$(sed -n 's/.* wrote .*offcpu-.* waits=\([0-9]*\) .*/\1/p' "$OUT"/profiler.log | awk '{ s += $1 } END { print s + 0 }')
offcpu=no
[ "$waits" -gt 0 ] && offcpu=yes
[ "$offcpu" = yes ] || [ "$loaded" = no ] || echo "CHECK-FAILED off-CPU: no wait recorded in the offcpu- files"

# Each trace's folded stacks name its own hot function and never the other's.
trace_id() { sed -n "s/^#define $1 \"\(.*\)\"/\1/p" "$TRACE_IDS"; }
folded_of() { profiler report "$OUT"/whole --trace "$(trace_id "$1")" --format folded 2>>"$OUT"/report.log; }
trace=no
if [ "$loaded" = yes ]; then
    a=$(folded_of TRACE_A_ID)
    b=$(folded_of TRACE_B_ID)
    if echo "$a" | grep -q traced_fn_a && ! echo "$a" | grep -q traced_fn_b &&
        echo "$b" | grep -q traced_fn_b && ! echo "$b" | grep -q traced_fn_a; then
        trace=yes
    else
        wrong=$( (echo "$a" | grep traced_fn_b; echo "$b" | grep traced_fn_a) | head -1 | tail -c 400)
        echo "CHECK-FAILED trace context: trace A has $(echo "$a" | grep -c traced_fn_a) stacks of traced_fn_a and $(echo "$a" | grep -c traced_fn_b) of traced_fn_b, trace B $(echo "$b" | grep -c traced_fn_b) of traced_fn_b and $(echo "$b" | grep -c traced_fn_a) of traced_fn_a${wrong:+; misfiled: ...$wrong}"
    fi
fi

# 2. Only a cgroup's processes.
cgroup=no
group="$CGROUP_ROOT/profiler-matrix-$$"
if [ "$loaded" = yes ] && mkdir "$group"; then
    sh -c 'echo $$ >"$1"/cgroup.procs && while :; do :; done' sh "$group" &
    inside=$!
    (while :; do :; done) &
    outside=$!
    # shellcheck disable=SC2086
    profiler record --duration 2 $RECORD --cgroup "$group" \
        --output-dir "$OUT"/cgroup >"$OUT"/profiler-cgroup.log 2>&1
    cgroup_code=$?
    kill "$inside" "$outside"
    wait "$inside" "$outside" 2>/dev/null
    rmdir "$group"
    # Folded lines start `comm (pid);`: the PIDs sampled.
    pids=$(profiler report "$OUT"/cgroup --format folded 2>>"$OUT"/report.log |
        sed -n 's/^[^;]*(\([0-9]*\));.*/\1/p' | sort -u | tr '\n' ' ')
    [ "$cgroup_code" = 0 ] && [ "$pids" = "$inside " ] && cgroup=yes
    echo "CGROUP inside=$inside outside=$outside sampled=$pids"
    [ "$cgroup" = yes ] || echo "CHECK-FAILED cgroup filter: sampled PIDs [$pids] for the inside PID $inside (outside $outside), exit $cgroup_code"
fi

# 3. Go goroutine labels.
go_const() { sed -n "s/^[[:space:]]*$1 *= \"\(.*\)\"/\1/p" "$GO_SOURCE"; }
go_fixtures=$(for dir in $(echo "$PATH" | tr ':' ' '); do ls "$dir"/golabels-* 2>/dev/null; done)
go=no
if [ "$loaded" = yes ] && [ -n "$go_fixtures" ]; then
    go=yes
    for fixture in $go_fixtures; do
        name=$(basename "$fixture")
        "$fixture" >"$OUT/$name.out" 2>&1 &
        gopid=$!
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            grep -q ready "$OUT/$name.out" && break
            sleep 0.5
        done
        # shellcheck disable=SC2086
        profiler record --duration 2 $RECORD --pid "$gopid" --output-dir "$OUT/$name" \
            >"$OUT/profiler-$name.log" 2>&1
        kill "$gopid"
        wait "$gopid" 2>/dev/null
        folded() { profiler report "$OUT/$name" --trace "$(go_const "$1")" --format folded 2>>"$OUT"/report.log; }
        a=$(folded traceA)
        b=$(folded traceB)
        handle='main.(*server).handle'
        process='main.(*worker).process'
        ok=no
        if echo "$a" | grep -qF "$handle" && ! echo "$a" | grep -qF "$process" &&
            echo "$b" | grep -qF "$process" && ! echo "$b" | grep -qF "$handle"; then
            ok=yes
        else
            go=no
            # What went wrong, with the end of one misfiled stack: the note of the table.
            wrong=$( (echo "$a" | grep -F "$process"; echo "$b" | grep -F "$handle") | head -1 | tail -c 400)
            echo "CHECK-FAILED go labels, $name: trace A has $(echo "$a" | grep -cF "$handle") stacks of $handle and $(echo "$a" | grep -cF "$process") of $process, trace B $(echo "$b" | grep -cF "$process") of $process and $(echo "$b" | grep -cF "$handle") of $handle${wrong:+; misfiled: ...$wrong}"
        fi
        echo "GO $name labels=$ok trace_a_stacks=$(echo "$a" | grep -c .) trace_b_stacks=$(echo "$b" | grep -c .)"
    done
fi

degraded=$(cat "$OUT"/profiler.log "$OUT"/profiler-cgroup.log 2>/dev/null | grep -c 'degraded:')

echo "PROFILER-LOG-BEGIN"
cat "$OUT"/profiler.log
[ -s "$OUT"/profiler-cgroup.log ] && echo "--- --cgroup run ---" && cat "$OUT"/profiler-cgroup.log
for log in "$OUT"/profiler-golabels-*.log; do
    [ -s "$log" ] && echo "--- $log ---" && cat "$log"
done
[ -s "$OUT"/report.log ] && echo "--- reports ---" && cat "$OUT"/report.log
# The log of a program the verifier refused (the profiler keeps it in its output directory).
for log in "$OUT"/whole/verifier-*.log "$OUT"/cgroup/verifier-*.log; do
    [ -s "$log" ] && echo "--- $log ---" && cat "$log"
done
echo "PROFILER-LOG-END"
echo "RESULT kernel=$(uname -r) btf=$btf loaded=$loaded sampled=$sampled samples=$samples files=$files trace=$trace cgroup=$cgroup go=$go offcpu=$offcpu waits=$waits degraded=$degraded insns=$insns exit=$code"
