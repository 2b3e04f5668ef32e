#!/bin/busybox sh
# PID 1 of the kernel matrix's initramfs (xtask/src/kernels): mounts what the profiler needs,
# runs the checks (check.sh, which prints the RESULT line that xtask reads on the serial
# console), and powers off.
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

export OUT=/tmp/matrix TRACE_IDS=/etc/trace_ids.h GO_SOURCE=/etc/go_labels.go CGROUP_ROOT=/sys/fs/cgroup
mkdir -p "$OUT"
sh /check.sh
poweroff -f
