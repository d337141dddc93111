#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on localhost, for tests/test_slurm.py (and by hand).
#
#   tests/slurm/cluster.sh install        apt-get install slurm-wlm + munge (only when missing; root)
#   tests/slurm/cluster.sh start DIR      munged + slurmctld + slurmd, all state under DIR
#   tests/slurm/cluster.sh stop DIR       stop exactly the daemons started for DIR (by PID)
#   tests/slurm/cluster.sh env DIR        the line to eval: export PATH=DIR/bin:$PATH SLURM_CONF=DIR/slurm.conf
#
# Nothing is written to /etc/slurm: clients find this cluster only through DIR/bin (wrappers of
# sbatch, srun, squeue, ... that set SLURM_CONF=DIR/slurm.conf) or SLURM_CONF itself, so other
# processes never see a configured-but-dead controller
# (the SLURM executor plugin runs `scontrol show config` when Snakemake starts; against a dead
# controller that costs ~9 s per start, without a config it fails at once).
# munged runs as the munge user on its own socket in DIR/munge (a system munged is left alone);
# slurmctld/slurmd run as root, slurmd as node "localhost" (-N), whatever the hostname is.
# No accounting database (accounting_storage/none): sacct cannot report jobs, so status is
# queried with squeue, and MinJobAge (3600 s) keeps finished jobs visible to squeue.
# DIR must be traversable by the munge user (e.g. mktemp -d under /tmp, then chmod 755).
# Ports: SLURM_TEST_CTLD_PORT / SLURM_TEST_SLURMD_PORT (default 16817 / 16818).
set -euo pipefail

die() { echo "cluster.sh: $*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts daemons)"; }

have_tools() {
    local tool
    for tool in munged slurmctld slurmd sbatch squeue scontrol sinfo srun; do
        command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || return 1
    done
}

cmd_install() {
    if have_tools; then
        echo "cluster.sh: slurm-wlm and munge already installed"
        return 0
    fi
    need_root
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install slurm-wlm and munge by hand"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
    have_tools || die "slurm-wlm/munge installed but their commands are missing"
    echo "cluster.sh: installed slurm-wlm and munge"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND... (COMMAND quiet and quick)
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    while ((SECONDS < deadline)); do
        if "$@"; then return 0; fi
        sleep 0.2
    done
    die "timed out after ${seconds}s waiting for $what"
}

node_ready() {  # node_ready DIR: both daemons alive (else fail at once) and the node schedulable
    local dir=$1
    pid_alive "$dir/slurmctld.pid" || die "slurmctld exited (see $dir/slurmctld.log)"
    pid_alive "$dir/slurmd.pid" || die "slurmd exited (see $dir/slurmd.log)"
    timeout 5 sinfo -h -N -n localhost -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}

stop_if_failed() {  # EXIT trap of a start: a start that fails half-way stops what it started
    local rc=$?
    if [ "$rc" != 0 ]; then cmd_stop "$STARTING_DIR" >&2; fi
}

cmd_start() {
    local dir=${1:?usage: cluster.sh start DIR}
    need_root
    have_tools || die "slurm-wlm/munge missing: run '$0 install' first"
    export PATH="$PATH:/usr/sbin:/sbin"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    chmod 755 "$dir"
    local ctld_port=${SLURM_TEST_CTLD_PORT:-16817} slurmd_port=${SLURM_TEST_SLURMD_PORT:-16818}
    local conf=$dir/slurm.conf
    STARTING_DIR=$dir
    trap stop_if_failed EXIT

    # munge: own key copy, socket, pid and log under DIR/munge, running as the munge user.
    install -d -o munge -g munge -m 755 "$dir/munge"
    if [ -f /etc/munge/munge.key ]; then
        install -o munge -g munge -m 400 /etc/munge/munge.key "$dir/munge/munge.key"
    else
        dd if=/dev/urandom bs=1 count=1024 2>/dev/null | install -o munge -g munge -m 400 /dev/stdin "$dir/munge/munge.key"
    fi
    runuser -u munge -- munged \
        --socket="$dir/munge/munge.socket" \
        --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" \
        || die "munged failed to start (see $dir/munge/munged.log)"
    wait_for 10 "munged" pid_alive "$dir/munge/munged.pid"
    ln -sf munge/munged.pid "$dir/munged.pid"

    # The node as slurmd sees it (CPUs, memory), named localhost.
    local cpus mem
    cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
    if [ -z "$cpus" ] || [ -z "$mem" ]; then die "could not read CPUs/RealMemory from 'slurmd -C'"; fi
    mem=$((mem * 9 / 10))
    install -d -m 755 "$dir/state" "$dir/spool"
    cat >"$conf" <<EOF
# Single-node test cluster written by tests/slurm/cluster.sh (not for production).
ClusterName=nexperiatest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue for an hour (status checks without sacct; >= 120 s).
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    # Client commands for this cluster in DIR/bin, each with SLURM_CONF built in: the plugin's
    # jobstep drops every SLURM_* variable (SLURM_CONF too) before it runs srun inside a job,
    # so an exported SLURM_CONF alone does not reach that srun; PATH does.
    install -d -m 755 "$dir/bin"
    local tool real
    for tool in sbatch srun salloc squeue scontrol scancel sinfo sacct sstat; do
        real=$(PATH=/usr/local/bin:/usr/bin:/bin command -v "$tool") || continue
        printf '#!/bin/sh\n# %s of the test cluster in %s (tests/slurm/cluster.sh)\nSLURM_CONF=%s exec %s "$@"\n' \
            "$tool" "$dir" "$conf" "$real" >"$dir/bin/$tool"
        chmod 755 "$dir/bin/$tool"
    done
    export SLURM_CONF=$conf
    # -i: ignore state left by an earlier cluster in the same DIR.
    slurmctld -i -f "$conf" || die "slurmctld failed to start (see $dir/slurmctld.log)"
    wait_for 15 "slurmctld" pid_alive "$dir/slurmctld.pid"
    slurmd -N localhost -f "$conf" || die "slurmd failed to start (see $dir/slurmd.log)"
    wait_for 15 "slurmd" pid_alive "$dir/slurmd.pid"
    wait_for 30 "node localhost to come up (see $dir/slurmctld.log, $dir/slurmd.log)" node_ready "$dir"
    trap - EXIT
    echo "cluster.sh: cluster up (node localhost: $cpus CPUs, $mem MB; partition test); to use it:"
    echo "export PATH=$dir/bin:\$PATH SLURM_CONF=$conf"
}

cmd_stop() {
    local dir=${1:?usage: cluster.sh stop DIR}
    [ -d "$dir" ] || return 0
    local name pidfile pid i
    # Cancel what is still queued or running and let SLURM end it, while the daemons are up.
    if pid_alive "$dir/slurmctld.pid" && pid_alive "$dir/slurmd.pid"; then
        export SLURM_CONF=$dir/slurm.conf
        timeout 10 scancel --partition=test >/dev/null 2>&1 || true
        local deadline=$((SECONDS + 30))
        while ((SECONDS < deadline)); do
            [ -z "$(timeout 5 squeue -h -t PD,R,CG,S -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    # slurmd first (it also ends any job still running on the node), then the controller, then munge.
    for name in slurmd slurmctld munged; do
        pidfile=$dir/$name.pid
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile" 2>/dev/null || true)
        [ -n "$pid" ] || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                echo "cluster.sh: $name ($pid) ignored SIGTERM, killing" >&2
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
    done
    echo "cluster.sh: cluster in $dir stopped"
}

cmd_env() {
    local dir=${1:?usage: cluster.sh env DIR}
    dir=$(cd "$dir" && pwd)
    echo "export PATH=$dir/bin:\$PATH SLURM_CONF=$dir/slurm.conf"
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start "${2:-}" ;;
    stop) cmd_stop "${2:-}" ;;
    env) cmd_env "${2:-}" ;;
    *) die "usage: $0 install | start DIR | stop DIR | env DIR" ;;
esac
