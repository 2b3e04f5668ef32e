#!/bin/busybox sh
# PID 1 of the kernel matrix's initramfs (xtask/src/kernels): mounts what the profiler needs,
# records 3 s of the whole VM while a busy loop runs, prints one machine-readable RESULT line
# and the profiler's log between markers, and powers off. xtask reads the serial console.
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
( while :; do :; done ) &
busy=$!
profiler record --duration 3 --interval 1 --frequency 99 --no-adaptive \
    --metrics-address off --node-name kernels --output-dir /out >/tmp/profiler.log 2>&1 &
profiler=$!

# The verifier's instruction count of the largest program, from the fdinfo of the profiler's
# program descriptors once it has attached (`verified_insns`: Linux 5.16 and later).
insns=-
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    grep -q 'recording the whole host' /tmp/profiler.log && break
    kill -0 "$profiler" 2>/dev/null || break
    sleep 0.5
done
for fdinfo in /proc/"$profiler"/fdinfo/*; do
    count=$(sed -n 's/^verified_insns:[[:space:]]*//p' "$fdinfo" 2>/dev/null)
    [ -n "$count" ] || continue
    if [ "$insns" = - ] || [ "$count" -gt "$insns" ]; then insns=$count; fi
done
wait "$profiler"
code=$?
kill "$busy"

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

echo "PROFILER-LOG-BEGIN"
cat /tmp/profiler.log
echo "PROFILER-LOG-END"
echo "RESULT kernel=$(uname -r) btf=$btf loaded=$loaded sampled=$sampled samples=$samples files=$files insns=$insns exit=$code"
poweroff -f
