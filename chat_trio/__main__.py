from chat_trio.cli import main

main()
