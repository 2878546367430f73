from rt.cli import main

main()
