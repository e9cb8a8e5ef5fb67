from isostack.cli import main

main()
