from gaia_p2p.cli import console_main

console_main()
