# Sourced by ./moeflux and .ci/run: finds a JDK >= 25 and exports JAVA_HOME.
# The first JDK >= 25 of: $JAVA_HOME, the java on $PATH, the JDKs under /usr/lib/jvm (or $MOEFLUX_JVM_DIR).
moeflux_java_feature() { # prints the feature version of the JDK at $1, or nothing
  [ -x "$1/bin/java" ] && [ -x "$1/bin/javac" ] || return 0
  # The release file answers in microseconds; starting a JVM per candidate cost ~0.3 s per launch.
  if [ -r "$1/release" ]; then
    sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$1/release" | head -n 1
    return 0
  fi
  "$1/bin/java" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n 1
}
moeflux_find_jdk() {
  local candidates=() c v
  [ -n "${JAVA_HOME-}" ] && candidates+=("$JAVA_HOME")
  if command -v java >/dev/null 2>&1; then
    candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
  fi
  for c in "${MOEFLUX_JVM_DIR:-/usr/lib/jvm}"/*; do [ -d "$c" ] && candidates+=("$c"); done
  for c in "${candidates[@]}"; do
    v=$(moeflux_java_feature "$c")
    if [ -n "$v" ] && [ "$v" -ge 25 ]; then
      export JAVA_HOME="$c"
      # Maven's Guice warns about sun.misc.Unsafe on every run on JDK 24+. The flag that quiets it stops an
      # older JVM from starting, so it is not in .mvn/jvm.config (./mvnw on an old JDK must reach the
      # enforcer's one-line message); it is passed here, where the JDK is known to be 25 or newer.
      export MAVEN_OPTS="${MAVEN_OPTS:+$MAVEN_OPTS }--sun-misc-unsafe-memory-access=allow"
      return 0
    fi
  done
  echo "moeflux needs a JDK 25 or newer, and none was found in JAVA_HOME, on PATH or under /usr/lib/jvm; install one (for example Temurin 25) and set JAVA_HOME to it." >&2
  return 1
}
