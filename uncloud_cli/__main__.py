from uncloud_cli.main import main

main()
