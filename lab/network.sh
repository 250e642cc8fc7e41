#!/bin/bash
# The lab's second network (remote HPC mode), set up from the build host:
#   network.sh connect CONTAINER NETWORK ALIAS   attach a running container to a further network
#   network.sh gateway CONTAINER NETWORK         the container forwards NETWORK's traffic to its other
#                                                networks, masqueraded (a site's NAT gateway)
#   network.sh route CONTAINER GATEWAY NETWORK   CONTAINER reaches NETWORK through GATEWAY (a container)
# Forwarding and routes live in the containers' network namespaces (entered with nsenter: no tools or
# capabilities needed inside), so they are made again after a container restarts: create.yml runs this
# on every `make lab`. Prints what it did: "changed" or "ok".
set -euo pipefail
subnet() { docker network inspect -f '{{(index .IPAM.Config 0).Subnet}}' "$1"; }
pid() { docker inspect -f '{{.State.Pid}}' "$1"; }
address() { docker inspect -f "{{(index .NetworkSettings.Networks \"$2\").IPAddress}}" "$1"; }
in_netns() { nsenter -t "$(pid "$1")" -n "${@:2}"; }

case ${1:-} in
  connect)
    [ $# -eq 4 ] || { echo "usage: $0 connect CONTAINER NETWORK ALIAS" >&2; exit 2; }
    if docker inspect -f '{{range $n, $_ := .NetworkSettings.Networks}}{{$n}} {{end}}' "$2" | grep -qw -- "$3"; then
      echo ok
    else
      docker network connect --alias "$4" "$3" "$2"
      echo changed
    fi
    ;;
  gateway)
    [ $# -eq 3 ] || { echo "usage: $0 gateway CONTAINER NETWORK" >&2; exit 2; }
    net=$(subnet "$3")
    rule=(POSTROUTING -s "$net" ! -d "$net" -j MASQUERADE)
    state=ok
    if [ "$(in_netns "$2" cat /proc/sys/net/ipv4/ip_forward)" != 1 ]; then
      in_netns "$2" sysctl -qw net.ipv4.ip_forward=1
      state=changed
    fi
    if ! in_netns "$2" iptables -t nat -C "${rule[@]}" 2>/dev/null; then
      in_netns "$2" iptables -t nat -A "${rule[@]}"
      state=changed
    fi
    echo "$state"
    ;;
  route)
    [ $# -eq 4 ] || { echo "usage: $0 route CONTAINER GATEWAY NETWORK" >&2; exit 2; }
    net=$(subnet "$4")
    # the gateway's address on a network both share
    via=""
    for n in $(docker inspect -f '{{range $n, $_ := .NetworkSettings.Networks}}{{$n}} {{end}}' "$2"); do
      [ "$n" = "$4" ] && continue
      if [ -n "$(address "$3" "$n")" ]; then
        via=$(address "$3" "$n")
        break
      fi
    done
    [ -n "$via" ] || { echo "$0: $2 and $3 share no network" >&2; exit 1; }
    if in_netns "$2" ip route show "$net" | grep -q "via $via "; then
      echo ok
    else
      in_netns "$2" ip route replace "$net" via "$via"
      echo changed
    fi
    ;;
  *)
    echo "usage: $0 connect|gateway|route ..." >&2
    exit 2
    ;;
esac
