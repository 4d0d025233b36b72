from rnnkit.cli import main

main()
