"""The wallet's screens: ``@ft.component`` functions that read ``WalletState`` and call it."""
