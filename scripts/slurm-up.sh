#!/usr/bin/env bash
# Bring up a real single-node Slurm cluster for the test suite (Debian's slurmctld/slurmd/slurmdbd 22.05,
# munge, a local MariaDB for accounting), as root, without systemd. Idempotent: when everything is already
# up with the same configuration it only checks and exits (well under a second).
#
#   bash scripts/slurm-up.sh        # install if needed, write configs, start daemons, wait until usable
#   bash scripts/slurm-down.sh      # stop them again
#
# Why each setting is there: docs/slurm-testing.md. Environment overrides (for an unusual machine):
#   FINET2I_SLURM_CPUS (8)  FINET2I_SLURM_MEM_MB (16000)  FINET2I_SLURM_GPUS (2)
set -euo pipefail

log() { printf 'slurm-up: %s\n' "$*"; }
die() { printf 'slurm-up: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons); the Slurm tests need root on Debian"
[[ -r /etc/debian_version ]] || die "not a Debian system (no /etc/debian_version): install Slurm 22.05+ with slurmdbd yourself or run without the Slurm tests (FINET2I_SLURM=0)"
command -v apt-get >/dev/null || die "apt-get not found: this script only knows Debian's packages"

T0=${EPOCHREALTIME/./}
elapsed() { local us=$((${EPOCHREALTIME/./} - T0)); printf '%d.%d s' $((us / 1000000)) $((us / 100000 % 10)); }

CLUSTER=finet2i
ACCOUNT=finet2i
NODE=$(hostname -s)
CPUS=${FINET2I_SLURM_CPUS:-8}
MEM_MB=${FINET2I_SLURM_MEM_MB:-16000}
NGPU=${FINET2I_SLURM_GPUS:-2}
DB_PASS=finet2i-slurm-test           # a throwaway local database; not a secret
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm

# --- 1. packages ------------------------------------------------------------------------------------------
PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server mariadb-client)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]} (apt-get)"
  # No init system here: keep postinst scripts from trying to start services (we start them ourselves,
  # with our configuration). Only add policy-rc.d if none exists, and remove only our own.
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_ok=1
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/finet2i-slurm-apt.log 2>&1; then
    log "apt-get install failed; running apt-get update and retrying"
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >>/tmp/finet2i-slurm-apt.log 2>&1; then
      apt_ok=0
    fi
  fi
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
  ((apt_ok)) || { tail -20 /tmp/finet2i-slurm-apt.log >&2; die "apt-get could not install ${missing[*]} (log: /tmp/finet2i-slurm-apt.log); check the Debian mirror / network"; }
  log "installed in $(elapsed)"
fi

# --- 2. configuration ---------------------------------------------------------------------------------------
mkdir -p "$CONF_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"

# Fake GPUs: slurmd accepts a GRES File= only if it is a character device; /dev/null's numbers (c 1 3) work.
gpu_files=()
for ((i = 0; i < NGPU; i++)); do
  dev=/dev/finet2i-gpu$i
  if [[ ! -c $dev ]]; then
    rm -f "$dev"
    mknod "$dev" c 1 3 || die "mknod $dev failed: fake GPU GRES needs character devices (container without CAP_MKNOD?)"
    log "created fake GPU device $dev"
  fi
  gpu_files+=("$dev")
done
gpu_range="/dev/finet2i-gpu[0-$((NGPU - 1))]"

new_slurm_conf=$(cat <<EOF
# Written by scripts/slurm-up.sh for the finet2i test suite. See docs/slurm-testing.md. Do not edit here.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (container, no systemd): track processes by /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
# Resources: cores and memory are consumable, GPUs are TRES.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# Let the node advertise more CPUs/memory than the machine has (tests run many tiny jobs side by side).
SlurmdParameters=config_overrides
GresTypes=gpu
# Accounting through slurmdbd: the executor plugin polls with sacct. Store the comment (the plugin puts the
# rule name there) and the GPU TRES so tests can check placement with sacct.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
# Finished jobs stay in squeue for MinJobAge: 120 s is what plugin 2.8 asks before it calls the squeue status
# path reliable (3x its default 40 s init delay); that path is the one that sees jobs scancel'ed from outside.
# Short timeouts for quick turnaround; the node comes back by itself after a restart.
MinJobAge=120
KillWait=5
InactiveLimit=0
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=60
ReturnToService=2
SchedulerParameters=defer_batch
MpiDefault=none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:$NGPU State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
# For the preflight tests (tests/preflight/test_preflight.py): a partition with a 60-minute limit, and a CPU-only partition
# whose one node exists on paper only (State=CLOUD: powered down, never started; nothing is ever scheduled
# there) so that "GPUs asked in a partition without GPUs" meets a real partition table.
# PrivateData=cloud: show that powered-down node in sinfo/scontrol (hidden otherwise), as cloud sites do.
PrivateData=cloud
NodeName=finet2i-cpuonly CPUs=16 RealMemory=64000 State=CLOUD
PartitionName=short Nodes=$NODE Default=NO MaxTime=60 State=UP
PartitionName=cpuonly Nodes=finet2i-cpuonly Default=NO MaxTime=INFINITE State=UP
EOF
)
new_gres_conf=$(cat <<EOF
# Written by scripts/slurm-up.sh: fake GPUs (character devices), no NVML autodetection.
AutoDetect=off
NodeName=$NODE Name=gpu File=$gpu_range
EOF
)
new_dbd_conf=$(cat <<EOF
# Written by scripts/slurm-up.sh: accounting in a local MariaDB.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
)

changed=0
write_if_changed() {  # path mode content
  local path=$1 mode=$2 content=$3
  if [[ ! -f $path ]] || [[ "$(cat "$path")" != "$content" ]]; then
    printf '%s\n' "$content" >"$path"
    chmod "$mode" "$path"
    log "wrote $path"
    changed=1
  fi
}
write_if_changed "$CONF_DIR/slurm.conf" 644 "$new_slurm_conf"
write_if_changed "$CONF_DIR/gres.conf" 644 "$new_gres_conf"
write_if_changed "$CONF_DIR/slurmdbd.conf" 600 "$new_dbd_conf"   # slurmdbd refuses a readable password file

# --- 3. daemons ---------------------------------------------------------------------------------------------
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # seconds description command...
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.3
  done
}

# munge: socket folder must be 0711 (munged refuses others), daemon runs as the munge user.
[[ -s /etc/munge/munge.key ]] || { log "creating munge key"; mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
  || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0711 /run/munge
if ! pid_alive /run/munge/munged.pid; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged || die "munged failed to start (see /var/log/munge/munged.log)"
  wait_for 10 munge munge -n || die "munge does not answer (munge -n); see /var/log/munge/munged.log"
fi

# MariaDB: the accounting database.
mysql_up() { mysqladmin --protocol=socket ping; }
if ! mysql_up >/dev/null 2>&1; then
  log "starting mariadb"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/tmp/finet2i-mariadb-init.log 2>&1 \
    || die "mariadb-install-db failed (/tmp/finet2i-mariadb-init.log)"
  # setsid + nohup: the server must outlive this script and the test process that called it.
  setsid nohup mysqld_safe --user=mysql --bind-address=127.0.0.1 >/tmp/finet2i-mariadb.log 2>&1 </dev/null &
  wait_for 60 mariadb mysql_up || die "mariadb did not come up in 60 s (/tmp/finet2i-mariadb.log, /var/log/mysql/)"
fi
mysql --protocol=socket -u root <<SQL || die "could not create the slurm accounting database in mariadb"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

restart_slurm=$changed
if ((restart_slurm)); then
  for d in slurmctld slurmd slurmdbd; do
    if pid_alive /run/$d.pid; then
      pid=$(cat /run/$d.pid)
      log "configuration changed: stopping $d (pid $pid) to restart it"
      kill "$pid"
      wait_for 20 "$d exit" bash -c "! kill -0 $pid 2>/dev/null" || die "$d (pid $pid) did not stop in 20 s"
    fi
  done
fi

if ! pid_alive /run/slurmdbd.pid; then
  log "starting slurmdbd"
  /usr/sbin/slurmdbd || die "slurmdbd failed to start (see $LOG_DIR/slurmdbd.log)"
  wait_for 30 slurmdbd sacctmgr -n show cluster || die "slurmdbd does not answer sacctmgr in 30 s (see $LOG_DIR/slurmdbd.log)"
fi

# Accounting objects: cluster, account, root's association (AccountingStorageEnforce=associations needs it).
sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" \
  || { sacctmgr -i add cluster "$CLUSTER" >/dev/null && log "added cluster $CLUSTER to accounting"; }
sacctmgr -n -P show account format=account | grep -qx "$ACCOUNT" \
  || { sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="finet2i tests" organization=finet2i >/dev/null \
       && log "added account $ACCOUNT"; }
sacctmgr -n -P show assoc where user=root account="$ACCOUNT" format=user | grep -qx root \
  || { sacctmgr -i add user root account="$ACCOUNT" defaultaccount="$ACCOUNT" cluster="$CLUSTER" >/dev/null \
       && log "added association root/$ACCOUNT"; }

# A second account whose only association is with the cpu partition (preflight tests: "account without an
# association for that partition", rejected by sbatch as on a real cluster).
sacctmgr -n -P show account format=account | grep -qx "$ACCOUNT-cpuonly" \
  || { sacctmgr -i add account "$ACCOUNT-cpuonly" cluster="$CLUSTER" description="finet2i preflight tests" organization=finet2i >/dev/null \
       && log "added account $ACCOUNT-cpuonly"; }
sacctmgr -n -P show assoc where user=root account="$ACCOUNT-cpuonly" format=partition | grep -qx cpu \
  || { sacctmgr -i add user root account="$ACCOUNT-cpuonly" partition=cpu cluster="$CLUSTER" >/dev/null \
       && log "added association root/$ACCOUNT-cpuonly/cpu"; }

if ! pid_alive /run/slurmctld.pid; then
  log "starting slurmctld"
  /usr/sbin/slurmctld || die "slurmctld failed to start (see $LOG_DIR/slurmctld.log)"
  wait_for 30 slurmctld scontrol ping || die "slurmctld does not answer scontrol ping (see $LOG_DIR/slurmctld.log)"
fi
if ! pid_alive /run/slurmd.pid; then
  log "starting slurmd"
  /usr/sbin/slurmd || die "slurmd failed to start (see $LOG_DIR/slurmd.log)"
fi

# --- 4. ready? ------------------------------------------------------------------------------------------------
node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1; }
node_usable() { case $(node_state) in idle | mixed | allocated | completing) return 0 ;; *) return 1 ;; esac; }
if ! node_usable; then
  wait_for 15 node node_usable || {
    state=$(node_state)
    case $state in
      down* | drain*)
        log "node $NODE is $state: resuming it"
        scontrol update nodename="$NODE" state=resume || true ;;
    esac
    wait_for 30 node node_usable || die "node $NODE is '$(node_state)', not idle after 45 s (see $LOG_DIR/slurmd.log, scontrol show node)"
  }
fi
gpus=$(scontrol show node "$NODE" | grep -o 'Gres=gpu:[0-9]*' | head -1)
[[ $gpus == "Gres=gpu:$NGPU" ]] || die "node $NODE does not show $NGPU GPUs (got '$gpus'); see $LOG_DIR/slurmd.log"

log "cluster $CLUSTER up: node $NODE $(node_state), partitions $(sinfo -h -o %P | tr '\n' ' ')($(elapsed))"
