ifconfig vio1 inet6 2001:db8:6200:4200:0:c633:6401:2 prefixlen 128 alias
ifconfig gif0 create
ifconfig gif0 tunnel 2001:db8:6200:4200:0:c633:6401:2 2001:db8:ffff::1
ifconfig gif0 inet 198.51.100.1 0.0.0.1 netmask 255.255.255.255
ifconfig gif0 mtu 1452
ifconfig gif0 up
route -n add -inet default 0.0.0.1
pfctl -a mape -f - <<'EOF'
match on gif0 inet proto tcp scrub (max-mss 1412)
match out on gif0 inet from (gif0) to any nat-to (gif0) map-e-portset 6/6/2
match out on gif0 inet from 192.168.1.0/24 to any nat-to (gif0) map-e-portset 6/6/2
pass out quick on vio1 inet6 proto ipencap from 2001:db8:6200:4200:0:c633:6401:2 to 2001:db8:ffff::1
pass in quick on vio1 inet6 proto ipencap from 2001:db8:ffff::1 to 2001:db8:6200:4200:0:c633:6401:2
pass out quick on gif0 inet from (gif0) keep state
EOF
