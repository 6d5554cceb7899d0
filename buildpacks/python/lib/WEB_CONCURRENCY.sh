# Written by the python buildpack; sourced at dyno start, before the process runs.
#
# WEB_CONCURRENCY (read by gunicorn and uvicorn as their default worker count) follows the
# dyno's size the way Heroku sets it: the lower of 2 x CPUs + 1 and one worker per 256 MB of the
# dyno's memory quota (standard-1X 512 MB -> 2, standard-2X 1 GB -> 4). The quota is read from the
# dyno's own cgroup. dynod puts the quota in the soft limit (v1 memory.soft_limit_in_bytes, v2
# memory.high) and the kill line at twice that in the hard limit (memory.limit_in_bytes,
# memory.max), as Heroku's R14/R15 work; the hard limit is only a fallback for a cgroup that has
# no quota of its own. A value the user set wins.

_dynod_memory_limit_mb() {
  local file value
  for file in /sys/fs/cgroup/memory/memory.soft_limit_in_bytes /sys/fs/cgroup/memory.high \
    /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max; do
    [[ -r "$file" ]] || continue
    read -r value < "$file" || continue
    [[ "$value" =~ ^[0-9]+$ ]] || continue  # "max": no limit
    value=$((value / 1048576))
    # cgroup v1 reports ~8 EiB when there is no limit; nothing above 1 TB is a real dyno size.
    ((value > 0 && value <= 1048576)) || continue
    echo "$value"
    return 0
  done
  return 1
}

_dynod_web_concurrency() {
  local memory_mb cpus by_memory by_cpus
  if ! memory_mb=$(_dynod_memory_limit_mb); then
    memory_mb=512  # no limit visible: size it like the smallest dyno rather than the whole host
  fi
  export DYNO_RAM="$memory_mb"
  [[ -v WEB_CONCURRENCY ]] && return 0
  cpus=$(nproc 2> /dev/null || echo 1)
  by_memory=$((memory_mb / 256))
  ((by_memory >= 1)) || by_memory=1
  by_cpus=$((cpus * 2 + 1))
  if ((by_memory < by_cpus)); then
    export WEB_CONCURRENCY="$by_memory"
  else
    export WEB_CONCURRENCY="$by_cpus"
  fi
}

_dynod_web_concurrency
unset -f _dynod_web_concurrency _dynod_memory_limit_mb
