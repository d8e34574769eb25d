#!/bin/sh
# Network stand-in installed by the AutoSafe sandbox (there is no network in the sandbox).
# It records what would have been sent: the arguments, the content of every file an argument
# names (also `@file` and `name=@file`), and stdin. Then it prints the scripted response.
log=/var/spool/outbound/@LOG@
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
      printf -- '--- file %s\n' "$f"
      head -c 1048576 -- "$f"
      printf '\n'
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
