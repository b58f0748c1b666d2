pfctl -a mape -F rules
route -n delete -inet default 0.0.0.1
ifconfig gif0 destroy
ifconfig vio1 inet6 2001:db8:312:3480:0:c000:212:d2 delete
