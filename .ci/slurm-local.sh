#!/usr/bin/env bash
# A real one-node SLURM (Debian 12: Slurm 22.05 with slurmdbd accounting on MariaDB) on this machine, for
# the tests of kacdist.cluster.slurm. Root only. Used by .ci/run; developers with root run it by hand:
#
#   bash .ci/slurm-local.sh start    # install the packages if missing, write the config, start; idempotent
#   bash .ci/slurm-local.sh stop     # stop the daemons this script started (by the PIDs it recorded)
#   bash .ci/slurm-local.sh status
#
# Partitions: "debug" (default) and "high", whose jobs preempt debug's by requeue (a USR2 first), so tests
# can show preemption. Accounting is not optional: submitit reads job states with sacct.
# KACDIST_SLURM_DIR: state, logs and config (default /tmp/kacdist-slurm).
set -euo pipefail

BASE=${KACDIST_SLURM_DIR:-/tmp/kacdist-slurm}
PIDS=$BASE/pids
LOGS=$BASE/logs
DB_SOCK=$BASE/mysqlrun/mysql.sock  # in a folder the mysql user owns

say() { echo "[slurm-local] $*" >&2; }
fail() { say "error: $*"; exit 1; }

running() {  # running NAME: the recorded PID is alive and still runs NAME
    local pid
    [[ -s $PIDS/$1 ]] || return 1
    pid=$(<"$PIDS/$1")
    [[ -d /proc/$pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1"* ]] && ! grep -q '^State:.*Z' "/proc/$pid/status"
}

detach() {  # detach NAME CMD...: own session, no inherited pipes, PID recorded
    local name=$1; shift
    setsid "$@" </dev/null >>"$LOGS/$name.out" 2>&1 &
    echo $! >"$PIDS/$name"
}

await() {  # await SECONDS WHAT CMD...
    local limit=$1 what=$2 i; shift 2
    for ((i = 0; i < limit * 4; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
    fail "no $what after ${limit}s (logs in $LOGS)"
}

install_packages() {
    local wanted=(munge slurmctld slurmd slurm-client slurmdbd slurm-wlm-mysql-plugin mariadb-server) missing=() p
    for p in "${wanted[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    say "installing ${missing[*]}"
    # the packages' maintainer scripts must not start daemons of their own
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOGS/apt.log" 2>&1 \
        || { rm -f /usr/sbin/policy-rc.d; tail -20 "$LOGS/apt.log" >&2; fail "apt-get install failed"; }
    rm -f /usr/sbin/policy-rc.d
}

write_config() {
    local cpus mem
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    mkdir -p /etc/slurm "$BASE/ctld" "$BASE/d"
    cat >/etc/slurm/slurm.conf <<EOF
# written by kacdist .ci/slurm-local.sh
ClusterName=kacdist
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job starts again cred_expire + 1 s later (default: 2 minutes)
AuthInfo=cred_expire=5
StateSaveLocation=$BASE/ctld
SlurmdSpoolDir=$BASE/d
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default a job without --mem holds the whole node
DefMemPerCPU=1024
SchedulerType=sched/backfill
# schedule at once instead of every few seconds
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=1,bf_interval=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
KillWait=10
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=30
PartitionName=high Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
    cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOGS/slurmdbd.log
PidFile=$BASE/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 644 /etc/slurm/slurm.conf
    chmod 600 /etc/slurm/slurmdbd.conf
}

start_munge() {
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key --force
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    if running munged || munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    detach munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
    await 20 munged bash -c 'munge -n | unmunge'
}

start_database() {
    local data=$BASE/mysql
    if ! running mariadbd; then
        install -d -o mysql -g mysql -m 0755 "$data" "$BASE/mysqlrun"
        [[ -d $data/mysql ]] || mariadb-install-db --no-defaults --user=mysql --datadir="$data" \
            --auth-root-authentication-method=socket --skip-test-db >"$LOGS/mariadb-install.log" 2>&1
        rm -f "$DB_SOCK"
        detach mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$data" --socket="$DB_SOCK" \
            --pid-file="$BASE/mysqlrun/mariadbd.pid" --bind-address=127.0.0.1 --port=3306 --innodb-buffer-pool-size=64M \
            --log-error="$LOGS/mariadbd.err"
        await 60 mariadb mariadb --socket="$DB_SOCK" -uroot -e 'select 1'
    fi
    mariadb --socket="$DB_SOCK" -uroot -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    running slurmdbd || detach slurmdbd /usr/sbin/slurmdbd -D
    await 60 slurmdbd sacctmgr -n -P list cluster
    sacctmgr -n -P list cluster format=cluster | grep -qx kacdist || sacctmgr -i add cluster kacdist >/dev/null
}

node_idle() { sinfo -h -n localhost -o %t | grep -qE '^(idle|mix|alloc|comp)'; }

start() {
    [[ $EUID == 0 ]] || fail "must run as root (it installs packages and starts daemons)"
    local began=$SECONDS
    mkdir -p "$PIDS" "$LOGS"
    chmod 755 "$BASE"
    install_packages
    write_config
    start_munge
    start_database
    running slurmctld || detach slurmctld /usr/sbin/slurmctld -D -i
    await 30 slurmctld bash -c 'scontrol ping | grep -q UP'
    running slurmd || detach slurmd /usr/sbin/slurmd -D -N localhost
    sleep 1
    # a node left down by an unclean stop comes back
    sinfo -h -n localhost -o %t | grep -qE 'down|drain|fail' && scontrol update nodename=localhost state=resume || true
    await 60 "idle node" node_idle
    say "cluster up in $((SECONDS - began)) s"
    sinfo >&2
}

stop_daemon() {
    local pid i
    running "$1" || { rm -f "$PIDS/$1"; return 0; }
    pid=$(<"$PIDS/$1")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do running "$1" || break; sleep 0.25; done
    running "$1" && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PIDS/$1"
}

stop() {
    local name
    for name in slurmd slurmctld slurmdbd mariadbd munged; do stop_daemon "$name"; done
}

status() {
    local name
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if running "$name"; then echo "$name: running ($(<"$PIDS/$name"))"; else echo "$name: not running"; fi
    done
    sinfo 2>&1 || true
}

case ${1:-start} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
