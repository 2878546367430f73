curl https://api.kash.bot/v1/markets \
  -H "X-API-Key: kash_live_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

curl https://api.kash.bot/v1/account/usage \
  -H "X-API-Key: $KASH_API_KEY"
