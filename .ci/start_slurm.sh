#!/usr/bin/env bash
# Start (or verify) a one-node SLURM cluster on loopback, for the SLURM tests.
#
#   bash .ci/start_slurm.sh
#
# Idempotent: installs the Debian packages only when missing, rewrites the
# configuration only when it would change (restarting the daemons then), starts
# only the daemons that are not running, and always ends by waiting (bounded)
# for `sinfo` to show the node idle. Exits non-zero with a one-line reason when
# the cluster cannot be brought up. Needs root (packages, /etc/slurm, daemons).
#
# The node fakes one GPU (gres gpu:1 backed by /dev/null) so that jobs asking
# for `--gpus=1` are scheduled; nothing on it is a real accelerator.
#
# Settings that matter to the tests and to snakemake-executor-plugin-slurm:
#   - MinJobAge=300: finished jobs stay visible to `squeue`/`scontrol show job`
#     for 5 minutes; the plugin's `--slurm-status-command squeue` needs
#     MinJobAge >= 3 x its init-seconds-before-status-checks, or it silently
#     falls back to `sacct`, which fails here (no accounting) and hangs.
#   - SlurmctldLogFile: tests grep "_slurm_rpc_submit_batch_job: JobId=" in it.
#   - no cgroups (proctrack/linuxproc, task/none) so it runs in containers.
set -euo pipefail

T0=$(date +%s)
log() { echo "[start_slurm +$(( $(date +%s) - T0 ))s] $*"; }
die() { echo "[start_slurm] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, writes /etc/slurm, starts daemons)"

# ---------------------------------------------------------------- packages --
PKGS=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null || die "apt-get not found; cannot install ${missing[*]}"
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    # No init system here: keep the packages' maintainer scripts from trying to
    # start the daemons (this script starts them itself).
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    cleanup_policy() { [ "$made_policy" = 1 ] && rm -f "$policy"; true; }
    trap cleanup_policy EXIT
    apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed (trying the install anyway)"
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/start_slurm_apt.log 2>&1; then
        tail -n 20 /tmp/start_slurm_apt.log >&2 || true
        die "apt-get install ${missing[*]} failed (log: /tmp/start_slurm_apt.log)"
    fi
    cleanup_policy
    trap - EXIT
    log "installed: $(dpkg-query -W -f='${Package} ${Version}\n' "${PKGS[@]}" | tr '\n' ' ')"
else
    log "packages present: $(dpkg-query -W -f='${Package} ${Version}\n' "${PKGS[@]}" | tr '\n' ' ')"
fi
for c in slurmctld slurmd munged sinfo scontrol sbatch srun squeue; do
    command -v "$c" >/dev/null || die "'$c' not found after installing ${PKGS[*]}"
done

# ----------------------------------------------------------- configuration --
HOST=$(hostname -s)
[ -n "$HOST" ] || die "hostname -s is empty"
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# A bit under the machine's memory (slurmd refuses a node that reports less).
REAL_MB=$(( MEM_MB * 9 / 10 ))
[ "$REAL_MB" -ge 256 ] || die "machine memory too small or unreadable (${MEM_MB} MB)"

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd /run/slurm

new_conf=$(cat <<EOF
# Written by .ci/start_slurm.sh: a one-node test cluster on loopback.
ClusterName=ci
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups, no accounting.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=10
# Finished jobs stay in squeue / scontrol show job for 5 minutes.
MinJobAge=300
# A fake GPU (gres.conf backs it with /dev/null).
GresTypes=gpu
NodeName=${HOST} NodeAddr=127.0.0.1 NodeHostname=${HOST} CPUs=${CPUS} RealMemory=${REAL_MB} Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
)
new_gres="NodeName=${HOST} Name=gpu File=/dev/null"

changed=0
if [ "$(cat "$CONF_DIR/slurm.conf" 2>/dev/null || true)" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF_DIR/slurm.conf"; changed=1
fi
if [ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null || true)" != "$new_gres" ]; then
    printf '%s\n' "$new_gres" >"$CONF_DIR/gres.conf"; changed=1
fi
if [ "$changed" = 1 ]; then
    log "wrote $CONF_DIR/slurm.conf and gres.conf (node $HOST, CPUs=$CPUS, RealMemory=${REAL_MB} MB, fake gpu:1)"
else
    log "configuration in $CONF_DIR unchanged (node $HOST, CPUs=$CPUS, RealMemory=${REAL_MB} MB)"
fi

# ------------------------------------------------------------------- munge --
id munge >/dev/null 2>&1 || die "user 'munge' missing (the munge package creates it)"
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
chown munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 700 /etc/munge /var/lib/munge /var/log/munge
chmod 755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    log "created /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

MUNGE_PID=/run/munge/munged.pid
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged running"
else
    log "starting munged (as user munge)"
    runuser -u munge -- munged --force || die "munged failed to start (see /var/log/munge/munged.log)"
    for _ in $(seq 1 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.5
    done
    munge -n | unmunge >/dev/null 2>&1 || die "munge credentials do not round-trip (munged not working)"
fi

# ----------------------------------------------------------------- daemons --
CTLD_PID=/run/slurm/slurmctld.pid
SLURMD_PID=/run/slurm/slurmd.pid

stop_pidfile() {  # stop the daemon whose pid is in $1 (only that pid)
    local f=$1 pid
    pid_alive "$f" || return 0
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
}

if [ "$changed" = 1 ] && { pid_alive "$CTLD_PID" || pid_alive "$SLURMD_PID"; }; then
    log "configuration changed: restarting slurmd and slurmctld"
    stop_pidfile "$SLURMD_PID"
    stop_pidfile "$CTLD_PID"
fi

if pid_alive "$CTLD_PID"; then
    log "slurmctld running (pid $(cat "$CTLD_PID"))"
else
    log "starting slurmctld -i"
    slurmctld -i || die "slurmctld failed to start (see $LOG_DIR/slurmctld.log)"
fi
if pid_alive "$SLURMD_PID"; then
    log "slurmd running (pid $(cat "$SLURMD_PID"))"
else
    log "starting slurmd"
    slurmd || die "slurmd failed to start (see $LOG_DIR/slurmd.log)"
fi

# -------------------------------------------------------------------- wait --
WAIT_S=${SLURM_START_TIMEOUT:-60}
state=""
resumed=0
deadline=$(( $(date +%s) + WAIT_S ))
while :; do
    state=$(sinfo -h -N -n "$HOST" -o '%t' 2>/dev/null | head -n 1 || true)
    case "$state" in
        idle|mix|alloc|comp) break ;;
        down*|drain*|drng*|fail*)
            if [ "$resumed" = 0 ]; then
                log "node state '$state': resuming it"
                scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "--- tail $LOG_DIR/slurmctld.log" >&2; tail -n 15 "$LOG_DIR/slurmctld.log" >&2 2>/dev/null || true
        echo "--- tail $LOG_DIR/slurmd.log" >&2; tail -n 15 "$LOG_DIR/slurmd.log" >&2 2>/dev/null || true
        die "node $HOST not idle after ${WAIT_S}s (sinfo state: '${state:-no answer}')"
    fi
    sleep 1
done
sinfo
log "SLURM cluster ready: node $HOST is '$state' (took $(( $(date +%s) - T0 ))s)"
