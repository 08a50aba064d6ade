"""The DIRAC facility: payload jobs on the DIRAC grid through DiracX (`diracx-client`).

`jdl` turns job specs into JDL; `connection` builds clients; `facility` is the Block.
"""
