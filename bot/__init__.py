"""The newsqa application: the Telegram bot, the terminal conversation and the command line."""
