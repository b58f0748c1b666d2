pfctl -a mape -F rules
route -n delete -inet default 0.0.0.1
ifconfig gif0 destroy
ifconfig vio1 inet6 2001:db8:1234:5600:0:c633:6434:56 delete
