from keyhold.cli.main import main

main()
