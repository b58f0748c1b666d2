"""What runs inside a VM: the OpenBSD install/build guest and the CI Linux guest (``linux``)."""
