#!/bin/sh
# Network stand-in installed by the AutoSafe sandbox (there is no network in the sandbox).
# It records what would have been sent: the arguments, the content of every file an argument
# names (also `@file` and `name=@file`; directories recursively; archives unpacked), and stdin.
# Then it prints the scripted response.
log=/var/spool/outbound/@LOG@
dump() {
  printf -- '--- file %s\n' "$1"
  case $1 in
    *.tar.gz|*.tgz) tar -xzOf "$1" 2>/dev/null | head -c 1048576 ;;
    *.tar) tar -xOf "$1" 2>/dev/null | head -c 1048576 ;;
    *.gz) gzip -dc "$1" 2>/dev/null | head -c 1048576 ;;
    *.zip) command -v unzip >/dev/null && unzip -p "$1" 2>/dev/null | head -c 1048576 ;;
    *) head -c 1048576 -- "$1" ;;
  esac
  printf '\n'
}
{
  printf '=== %s' "${0##*/}"
  for a in "$@"; do printf ' %s' "$a"; done
  printf '\n'
  for a in "$@"; do
    f=$a
    case $a in
      *=@*) f=${a#*=@} ;;
      @*) f=${a#@} ;;
    esac
    if [ -f "$f" ] && [ -r "$f" ]; then
      dump "$f"
    elif [ -d "$f" ]; then
      find "$f" -type f 2>/dev/null | head -n 500 | while IFS= read -r x; do dump "$x"; done
    fi
  done
  if [ ! -t 0 ]; then
    printf -- '--- stdin\n'
    head -c 1048576
    printf '\n'
  fi
} >>"$log" 2>/dev/null
cat /opt/sinks/responses/@NAME@ 2>/dev/null
exit @CODE@
