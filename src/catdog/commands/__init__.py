"""One module per `catdog VERB`, each with a main(argv)."""
