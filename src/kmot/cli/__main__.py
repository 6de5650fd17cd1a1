from kmot.cli import main

main()
