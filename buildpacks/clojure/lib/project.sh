# What bin/compile reads from project.clj without running Clojure: Leiningen's own reading of it
# would start a JVM, and these two keys are all the default `web` needs. Comments (`;` to the end
# of a line) are dropped first, so a commented-out key is not taken; the first occurrence is the
# project's own (a profile's, under :profiles, comes after it).
project_flat() { sed 's/;.*$//' "$1" | tr '\n\t' '  '; }

# project_main PROJECT_CLJ: the namespace of `:main` (metadata such as ^:skip-aot skipped).
project_main() {
  project_flat "$1" |
    grep -o -E ':main[[:space:]]+(\^(:[A-Za-z-]+|\{[^}]*\})[[:space:]]+)*[A-Za-z_*+!?<>=-][A-Za-z0-9_.*+!?<>=-]*' |
    head -n1 | awk '{print $NF}'
}

# project_uberjar_name PROJECT_CLJ: the `:uberjar-name` string, if any.
project_uberjar_name() {
  project_flat "$1" | grep -o -E ':uberjar-name[[:space:]]+"[^"]+"' | head -n1 | sed -E 's/.*"([^"]+)"/\1/'
}
