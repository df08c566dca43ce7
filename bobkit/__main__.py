from bobkit.cli_app import main

main()
