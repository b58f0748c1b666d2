pfctl -a mape -F rules
route -n delete -inet default 0.0.0.1
ifconfig gif0 destroy
ifconfig vio1 inet6 2001:db8:112:3400:0:cb00:7112:34 delete
