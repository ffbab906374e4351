from invoicetrail.cli import main

main()
