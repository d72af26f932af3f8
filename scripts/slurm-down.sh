#!/usr/bin/env bash
# Stop the test cluster that scripts/slurm-up.sh started: cancel leftover jobs, then stop slurmctld, slurmd,
# slurmdbd, mariadb and munged, each by its own pid file (nothing else on the machine is touched).
# Safe to call when nothing is running. Packages, configuration and the accounting database are kept, so the
# next slurm-up.sh is quick.
set -uo pipefail

log() { printf 'slurm-down: %s\n' "$*"; }
[[ $(id -u) -eq 0 ]] || { log "not root: nothing to stop (slurm-up.sh only runs as root)"; exit 0; }

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {  # name pidfile
  local name=$1 pf=$2 pid
  pid_alive "$pf" || return 0
  pid=$(cat "$pf")
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || { log "stopped $name (pid $pid)"; rm -f "$pf"; return 0; }; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null && log "killed $name (pid $pid) after 10 s"
  rm -f "$pf"
}

# Jobs first: slurmstepd and the job's processes outlive slurmd, and a left-over test job would keep using
# the shared machine's CPU.
if pid_alive /run/slurmctld.pid; then
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [[ -n ${jobs// /} ]]; then
    log "cancelling jobs $jobs"
    scancel $jobs 2>/dev/null
    for _ in $(seq 1 50); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 0.2; done
  fi
fi

stop_pidfile slurmd /run/slurmd.pid
stop_pidfile slurmctld /run/slurmctld.pid
stop_pidfile slurmdbd /run/slurmdbd.pid
if mysqladmin --protocol=socket ping >/dev/null 2>&1; then
  # mysqld_safe exits by itself once the server shuts down cleanly.
  mysqladmin --protocol=socket shutdown && log "stopped mariadb"
fi
stop_pidfile munged /run/munge/munged.pid
log "done"
