# Written by the java buildpack into .profile.d: Heroku's JVM defaults. The heap follows the
# dyno's memory quota, read from its own cgroup: on cgroup v1 memory.soft_limit_in_bytes is the
# quota (memory.limit_in_bytes is the hard limit, twice the quota, where the dyno is killed);
# on v2 memory.high, else memory.max; DYNO_RAM (MB) when neither can be read. The sizes are
# Heroku's: 300m (and smaller thread stacks) on 512 MB, 671m on 1 GB, 80% above that. A value the
# user set (JAVA_OPTS, JAVA_TOOL_OPTIONS) wins.
jvm_quota_mb() {
  local root=/sys/fs/cgroup bytes=""
  for file in "$root/memory/memory.soft_limit_in_bytes" "$root/memory.high" "$root/memory.max"; do
    if [[ -r "$file" ]]; then
      bytes=$(cat "$file" 2> /dev/null)
      [[ "$bytes" =~ ^[0-9]+$ ]] && ((bytes < 1 << 50)) && { echo $((bytes / 1048576)); return; }
    fi
  done
  [[ "${DYNO_RAM:-}" =~ ^[0-9]+$ ]] && echo "$DYNO_RAM"
}
jvm_heap_opts() {
  local mb
  mb=$(jvm_quota_mb)
  if [[ -z "$mb" ]]; then
    echo "-XX:MaxRAMPercentage=80.0"
  elif ((mb <= 512)); then
    echo "-Xmx300m -Xss512k -XX:CICompilerCount=2"
  elif ((mb <= 1024)); then
    echo "-Xmx671m -XX:CICompilerCount=2"
  else
    echo "-Xmx$((mb * 8 / 10))m"
  fi
}
export JAVA_HOME="${JAVA_HOME:-/usr/lib/jvm/default-java}"
export JAVA_OPTS="${JAVA_OPTS:-$(jvm_heap_opts) -Dfile.encoding=UTF-8}"
export JAVA_TOOL_OPTIONS="${JAVA_TOOL_OPTIONS:-$(jvm_heap_opts) -Dfile.encoding=UTF-8}"
unset -f jvm_quota_mb jvm_heap_opts
