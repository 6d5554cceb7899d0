# Sourced by bin/compile (bash). Unit-tested in tests/unit/test_buildpack_python_reuse.py.

# Whether pip, run again on the cached venv, can only say "Requirement already satisfied": every
# line of FILE (requirements.txt) is a plain requirement (a name, extras, version specifiers, markers).
# Anything pip would read beyond this file's bytes makes it run: -r/-c includes, -e and local
# paths and archive file names (their contents change without the file changing), URLs, `name @ url`, ${VAR} expansion,
# line continuations, options; and any PIP_* config var in ENV_DIR (PIP_UPGRADE, another index, ...).
plain_requirements() {
  local file=$1 env_dir=$2
  local line name='[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?' extras='(\[[A-Za-z0-9._,[:space:]-]*\])?'
  local specifiers='([<>=!~][<>=!~0-9A-Za-z.*+_,[:space:]-]*)?' markers='(;[^@/\\$]*)?'
  local requirement="^$name[[:space:]]*$extras[[:space:]]*$specifiers$markers\$"
  local config
  for config in "$env_dir"/PIP_*; do
    [[ -e "$config" ]] && return 1
  done
  while IFS= read -r line || [[ -n "$line" ]]; do
    line=${line%%$'\r'}
    [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]] && continue
    [[ "$line" == *\\ || "$line" == *'$'* ]] && return 1
    line=${line%%[[:space:]]#*}
    [[ "$line" =~ $requirement ]] || return 1
    # A name ending like an archive is a local file to pip (foo-1.0-py3-none-any.whl, foo.tar.gz).
    [[ "${line%%[[:space:];<>=!~\[]*}" =~ \.(whl|zip|tar|tgz|tbz|txz|tlz|gz|bz2|xz|lz|lzma)$ ]] && return 1
  done < "$file"
  return 0
}
